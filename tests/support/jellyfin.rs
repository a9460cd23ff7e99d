//! The fake Jellyfin's Jellyfin: sign-in and sessions, an API key, the
//! credentials Jellyfin 10.11 and Jellyfin 12 read (`Jellyfin::v12` turns
//! legacy authorization off, as 12 does by default), a small library whose
//! item ids are derived as Jellyfin derives them, its authorized routes
//! (items, PlaybackInfo, the current HLS that carries the request's `ApiKey`
//! onto every URL it writes, the older HLS playlist) and its side doors —
//! the media, image, subtitle, attachment and older HLS segment routes it
//! serves to anyone, checking nothing, as Jellyfin does. The media are real
//! (made once by ffmpeg), so real players play them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::origin::TEST_API_KEY;

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// The one user: name, password, id.
pub const USER: &str = "mum";
/// Her password.
pub const PASSWORD: &str = "right";
/// Her id.
pub const USER_ID: &str = "5f1b0e9a7c3d4e2f8a6b9c0d1e2f3a4b";

/// The film's type and path, from which Jellyfin derives its id.
pub const MOVIE_TYPE: &str = "MediaBrowser.Controller.Entities.Movies.Movie";
/// The film's file, as a library scan finds it (guessable from its name).
pub const MOVIE_PATH: &str = "/media/movies/Big Buck Bunny (2008)/Big Buck Bunny (2008).mp4";
/// The song's type.
pub const SONG_TYPE: &str = "MediaBrowser.Controller.Entities.Audio.Audio";
/// The song's file.
pub const SONG_PATH: &str = "/media/music/The Band/The Album/01 - The Song.mp3";

/// An item's id as Jellyfin computes it: `new Guid(MD5(UTF-16LE(type.FullName
/// plus path)))`, written as 32 hex digits (.NET's byte order for a Guid's
/// first three fields).
pub fn item_id(type_name: &str, path: &str) -> String {
    use md5::Digest;
    let utf16: Vec<u8> = format!("{type_name}{path}")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let b = md5::Md5::digest(&utf16);
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    order.iter().map(|&i| format!("{:02x}", b[i])).collect()
}

/// The film's id.
pub fn movie_id() -> String {
    item_id(MOVIE_TYPE, MOVIE_PATH)
}

/// The song's id.
pub fn song_id() -> String {
    item_id(SONG_TYPE, SONG_PATH)
}

/// Who a request authenticated as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// A signed-in user's session.
    User,
    /// The API key (no user).
    ApiKey,
}

/// Jellyfin's own state: its mode and sessions, and what its side doors
/// served.
#[derive(Debug, Default)]
pub struct Jellyfin {
    /// Jellyfin 12: legacy authorization off.
    twelve: AtomicBool,
    sessions: Mutex<HashMap<String, ()>>,
    next: AtomicU64,
    /// Requests the side doors answered.
    pub side_doors: AtomicU64,
    /// `/Users/Me` requests (what a proxy's checks cost Jellyfin).
    pub me: AtomicU64,
}

impl Jellyfin {
    /// Behaves as Jellyfin 12 from now on: the `api_key` parameter, the
    /// `X-Emby-Token`, `X-MediaBrowser-Token` and `X-Emby-Authorization`
    /// headers and the `Emby` scheme are refused, and a request carrying
    /// one of them beside a current credential is refused too.
    pub fn v12(&self) {
        self.twelve.store(true, Ordering::SeqCst);
    }

    /// Requests the side doors answered so far.
    pub fn side_door_count(&self) -> u64 {
        self.side_doors.load(Ordering::SeqCst)
    }

    /// `/Users/Me` requests so far.
    pub fn me_count(&self) -> u64 {
        self.me.load(Ordering::SeqCst)
    }

    /// A new session for the user, as a sign-in makes: its token.
    pub fn sign_in(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let token = format!("{:032x}", 0xabcd_0000_u128 + u128::from(n) * 7919);
        self.sessions.lock().unwrap().insert(token.clone(), ());
        token
    }

    /// Who `headers` and `uri` authenticate as, as Jellyfin reads them.
    pub fn authenticate(&self, headers: &HeaderMap, uri: &Uri) -> Option<Principal> {
        let twelve = self.twelve.load(Ordering::SeqCst);
        let mut current = Vec::new();
        let mut legacy = Vec::new();
        for (name, value) in headers {
            let Ok(value) = value.to_str() else { continue };
            match name.as_str() {
                "authorization" => match scheme_token(value) {
                    Some(("mediabrowser", token)) => current.push(token),
                    Some((_, token)) => legacy.push(token),
                    None => {}
                },
                "x-emby-authorization" => {
                    if let Some((_, token)) = scheme_token(value) {
                        legacy.push(token);
                    }
                }
                "x-emby-token" | "x-mediabrowser-token" => legacy.push(value.to_string()),
                _ => {}
            }
        }
        for pair in uri.query().unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = super::origin::kestrel_path(&format!("/{name}"));
            let name = name.trim_start_matches('/');
            if value.is_empty() {
                continue;
            }
            if name.eq_ignore_ascii_case("apikey") {
                current.push(value.to_string());
            } else if name.eq_ignore_ascii_case("api_key") {
                legacy.push(value.to_string());
            }
        }
        if twelve && !legacy.is_empty() {
            return None;
        }
        let sessions = self.sessions.lock().unwrap();
        current
            .iter()
            .chain(&legacy)
            .find_map(|token| match token.as_str() {
                t if t == TEST_API_KEY => Some(Principal::ApiKey),
                t if sessions.contains_key(t) => Some(Principal::User),
                _ => None,
            })
    }

    fn sign_out(&self, headers: &HeaderMap, uri: &Uri) {
        let mut sessions = self.sessions.lock().unwrap();
        for value in headers.get_all(header::AUTHORIZATION) {
            if let Some((_, token)) = value.to_str().ok().and_then(scheme_token) {
                sessions.remove(&token);
            }
        }
        for pair in uri.query().unwrap_or("").split('&') {
            if let Some((_, token)) = pair.split_once('=') {
                sessions.remove(token);
            }
        }
    }
}

/// The scheme (lower case) and `Token` of an `Authorization`-style value.
fn scheme_token(value: &str) -> Option<(&'static str, String)> {
    let (scheme, params) = value.trim().split_once(' ')?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "mediabrowser" => "mediabrowser",
        "emby" => "emby",
        _ => return None,
    };
    let token = params.split(',').find_map(|param| {
        let (name, value) = param.trim().split_once('=')?;
        (name.trim() == "Token").then(|| value.trim().trim_matches('"').to_string())
    })?;
    (!token.is_empty()).then_some((scheme, token))
}

/// Media made once by ffmpeg: a film (MP4), its HLS segments (MPEG-TS, one
/// second each), a song (MP3) and a poster (PNG).
pub struct Media {
    pub film: Vec<u8>,
    pub segments: Vec<Vec<u8>>,
    pub song: Vec<u8>,
    pub poster: Vec<u8>,
}

/// The media, made at the first call (ffmpeg must be installed: .ci/run
/// installs Debian's).
pub fn media() -> &'static Media {
    static MEDIA: OnceLock<Media> = OnceLock::new();
    MEDIA.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-y"])
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("ffmpeg is installed (.ci/run installs Debian's)");
            assert!(
                out.status.success(),
                "ffmpeg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x90:rate=25:duration=4",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=4",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-profile:v",
            "baseline",
            "-g",
            "25",
            "-c:a",
            "aac",
            "-shortest",
            "-movflags",
            "+faststart",
            "film.mp4",
        ]);
        run(&[
            "-i",
            "film.mp4",
            "-c",
            "copy",
            "-f",
            "segment",
            "-segment_time",
            "1",
            "-segment_format",
            "mpegts",
            "-reset_timestamps",
            "0",
            "seg%d.ts",
        ]);
        run(&[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=220:duration=2",
            "-c:a",
            "libmp3lame",
            "song.mp3",
        ]);
        run(&[
            "-f",
            "lavfi",
            "-i",
            "color=c=red:size=32x48",
            "-frames:v",
            "1",
            "poster.png",
        ]);
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        let mut segments = Vec::new();
        while dir
            .path()
            .join(format!("seg{}.ts", segments.len()))
            .exists()
        {
            segments.push(read(&format!("seg{}.ts", segments.len())));
        }
        Media {
            film: read("film.mp4"),
            segments,
            song: read("song.mp3"),
            poster: read("poster.png"),
        }
    })
}

fn answer(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type.parse().unwrap());
    response
}

fn json(value: &serde_json::Value) -> Response<Body> {
    answer(StatusCode::OK, "application/json", value.to_string())
}

fn unauthorized() -> Response<Body> {
    answer(StatusCode::UNAUTHORIZED, "text/plain", "Unauthorized")
}

/// `bytes` as Jellyfin streams a file: ranges answered with 206.
fn file(request_headers: &HeaderMap, content_type: &str, bytes: &[u8]) -> Response<Body> {
    let range = request_headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            let start: usize = a.parse().ok()?;
            let end: usize = b.parse().unwrap_or(bytes.len() - 1).min(bytes.len() - 1);
            (start <= end).then_some((start, end))
        });
    let mut response = match range {
        Some((start, end)) => {
            let mut r = answer(
                StatusCode::PARTIAL_CONTENT,
                content_type,
                bytes[start..=end].to_vec(),
            );
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{}", bytes.len())
                    .parse()
                    .unwrap(),
            );
            r
        }
        None => answer(StatusCode::OK, content_type, bytes.to_vec()),
    };
    response
        .headers_mut()
        .insert(header::ACCEPT_RANGES, "bytes".parse().unwrap());
    response
}

/// The item JSON of the library.
fn items() -> serde_json::Value {
    serde_json::json!({
        "Items": [
            { "Id": movie_id(), "Name": "Big Buck Bunny", "Type": "Movie", "MediaType": "Video", "ServerId": "f00",
              "ImageTags": { "Primary": "tag1" } },
            { "Id": song_id(), "Name": "The Song", "Type": "Audio", "MediaType": "Audio", "ServerId": "f00",
              "ImageTags": { "Primary": "tag2" } }
        ],
        "TotalRecordCount": 2,
        "StartIndex": 0
    })
}

/// The query as it came, for the URLs the current HLS writes.
fn query_of(uri: &Uri) -> String {
    uri.query().map(|q| format!("?{q}")).unwrap_or_default()
}

/// The fake's answer for a Jellyfin route (`route`: the path as Kestrel's
/// router reads it, lower case), or the request back for the origin's own
/// routes (handing it back is why the error side is large).
#[allow(clippy::result_large_err)]
pub async fn answer_for(
    route: &str,
    request: Request<Incoming>,
    jellyfin: &Jellyfin,
) -> Result<Response<Body>, Request<Incoming>> {
    let s: Vec<&str> = route.trim_matches('/').split('/').collect();
    let movie = movie_id();
    let song = song_id();
    let known = |id: &str| id == movie || id == song;
    let who = jellyfin.authenticate(request.headers(), request.uri());
    let side_door = |response: Response<Body>| {
        jellyfin.side_doors.fetch_add(1, Ordering::SeqCst);
        Ok(response)
    };
    let authorized = |response: Response<Body>| {
        if who.is_some() {
            Ok(response)
        } else {
            Ok(unauthorized())
        }
    };
    let method = request.method().clone();
    match s.as_slice() {
        ["users", "authenticatebyname"] if method == Method::POST => {
            // A test's slow home: `x-test-delay-ms` before the answer.
            let delay = request
                .headers()
                .get("x-test-delay-ms")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            if let Some(ms) = delay {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            let login: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if login["Pw"] == PASSWORD {
                let token = jellyfin.sign_in();
                let name = login["Username"].as_str().unwrap_or(USER).to_string();
                Ok(json(&serde_json::json!({
                    "User": { "Id": USER_ID, "Name": name, "ServerId": "f00" },
                    "AccessToken": token,
                    "ServerId": "f00",
                    "SessionInfo": { "UserId": USER_ID }
                })))
            } else {
                Ok(answer(StatusCode::UNAUTHORIZED, "text/plain", "Error processing request."))
            }
        }
        ["sessions", "logout"] if method == Method::POST => {
            if who.is_none() {
                return Ok(unauthorized());
            }
            jellyfin.sign_out(request.headers(), request.uri());
            Ok(answer(StatusCode::NO_CONTENT, "text/plain", ""))
        }
        ["users", "me"] => {
            jellyfin.me.fetch_add(1, Ordering::SeqCst);
            let mut response = match who {
                Some(Principal::User) => json(&serde_json::json!({ "Name": USER, "Id": USER_ID })),
                // Authenticated, no user behind an API key: the action's 400.
                Some(Principal::ApiKey) => answer(StatusCode::BAD_REQUEST, "text/plain", "no user"),
                None => unauthorized(),
            };
            // A personal answer wrongly marked public: only a proxy's own
            // rules keep it from other clients (path_spelling.rs).
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                "public, max-age=600".parse().unwrap(),
            );
            Ok(response)
        }
        ["users", "public"] => Ok(json(&serde_json::json!([{ "Name": USER, "Id": USER_ID }]))),
        ["users", _, "items"] | ["items"] => authorized(json(&items())),
        ["items", id, "playbackinfo"] if known(id) => authorized(json(&serde_json::json!({
            "MediaSources": [{
                "Id": id, "Container": "mp4", "Protocol": "File",
                "SupportsDirectStream": true, "SupportsDirectPlay": true, "SupportsTranscoding": true,
                "MediaStreams": [
                    { "Type": "Video", "Index": 0, "Codec": "h264" },
                    { "Type": "Audio", "Index": 1, "Codec": "aac" },
                    { "Type": "Subtitle", "Index": 2, "Codec": "srt", "IsExternal": true,
                      "DeliveryUrl": format!("/Videos/{id}/{id}/Subtitles/2/0/Stream.srt") }
                ]
            }],
            "PlaySessionId": "ps1"
        }))),
        ["videos", id, "master.m3u8"] if known(id) => authorized(answer(
            StatusCode::OK,
            "application/vnd.apple.mpegurl",
            format!(
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=600000,RESOLUTION=160x90,CODECS=\"avc1.42c01e,mp4a.40.2\"\nmain.m3u8{}\n",
                query_of(request.uri())
            ),
        )),
        ["videos", id, "main.m3u8"] if known(id) => {
            let query = query_of(request.uri());
            authorized(answer(StatusCode::OK, "application/vnd.apple.mpegurl", playlist(|n| format!("hls1/main/{n}.ts{query}"))))
        }
        ["videos", id, "hls1", _, segment] if known(id) => authorized(segment_answer(segment)),
        ["videos", id, "hls", _, "stream.m3u8"] if known(id) => {
            // The older HLS: its segment lines carry nothing of the request.
            authorized(answer(StatusCode::OK, "application/vnd.apple.mpegurl", playlist(|n| format!("{n}.ts"))))
        }
        ["videos", id, "hls", _, segment] if known(id) => side_door(segment_answer(segment)),
        ["videos", id, stream] if *id == movie && stream.starts_with("stream") => {
            side_door(file(request.headers(), "video/mp4", &media().film))
        }
        ["audio", id, stream] if *id == song && stream.starts_with("stream") => {
            side_door(file(request.headers(), "audio/mpeg", &media().song))
        }
        ["audio", id, "hls", _, stream] if *id == song && stream.starts_with("stream") => {
            side_door(answer(StatusCode::OK, "audio/aac", media().song.clone()))
        }
        ["items", id, "images", ..] if known(id) => {
            let mut response = answer(StatusCode::OK, "image/png", media().poster.clone());
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                "public, max-age=31536000, immutable".parse().unwrap(),
            );
            side_door(response)
        }
        ["videos", id, _, "subtitles", _, .., last] if known(id) && last.starts_with("stream.") => {
            side_door(answer(StatusCode::OK, "text/plain", "1\n00:00:00,000 --> 00:00:02,000\nA secret line\n"))
        }
        ["videos", id, _, "attachments", _] if known(id) => {
            side_door(answer(StatusCode::OK, "application/x-truetype-font", "font bytes"))
        }
        ["branding", "splashscreen"] => side_door(answer(StatusCode::OK, "image/png", media().poster.clone())),
        // A page as the web client behaves, and the player it uses (static
        // files: Jellyfin serves /web/ to anyone).
        ["web", "player.html"] => Ok(answer(
            StatusCode::OK,
            "text/html; charset=utf-8",
            include_str!("../clients/player.html"),
        )),
        ["web", "hls.min.js"] => Ok(match std::fs::read(HLS_JS) {
            Ok(script) => answer(StatusCode::OK, "text/javascript", script),
            Err(_) => answer(StatusCode::NOT_FOUND, "text/plain", "npm ci --prefix tests/clients"),
        }),
        ["system", "info"] => authorized(json(&serde_json::json!({ "ServerName": "fake", "Version": "12.0.0", "Id": "f00" }))),
        _ => Err(request),
    }
}

/// hls.js as the npm registry ships it (`.ci/run` runs `npm ci` in
/// tests/clients).
pub const HLS_JS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/node_modules/hls.js/dist/hls.min.js"
);

/// A media playlist of the segments, each at `url(n)`.
fn playlist(url: impl Fn(usize) -> String) -> String {
    let mut text = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n".to_string();
    for n in 0..media().segments.len() {
        text.push_str(&format!("#EXTINF:1.000000,\n{}\n", url(n)));
    }
    text.push_str("#EXT-X-ENDLIST\n");
    text
}

fn segment_answer(name: &str) -> Response<Body> {
    let n: Option<usize> = name.strip_suffix(".ts").and_then(|n| n.parse().ok());
    match n.and_then(|n| media().segments.get(n)) {
        Some(bytes) => answer(StatusCode::OK, "video/mp2t", bytes.clone()),
        None => answer(StatusCode::NOT_FOUND, "text/plain", "no such segment"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn item_ids_come_from_the_path_as_jellyfins_do() {
        let id = super::movie_id();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(id, super::item_id(super::MOVIE_TYPE, super::MOVIE_PATH));
        assert_ne!(id, super::song_id());
    }
}
