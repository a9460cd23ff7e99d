//! Which of Jellyfin's routes a request is, as its router reads the path
//! (`canonical.rs` has put the one spelling in place; Jellyfin's routes
//! ignore case and a trailing `/`): the public ones a signed-out app needs to
//! show its login screen and sign in, the side doors Jellyfin serves to
//! anyone who knows an item id, and the rest of its API.

use crate::filter::access::{path_segments, RouteClass};

/// What a request's path is to the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Open to anyone: the login routes, public system info, branding, the
    /// web client's files (`PUBLIC`, and a site's own `gate_public`).
    Public,
    /// `/Users/Public`: the users shown on a login screen. Answered `[]` at
    /// the edge (apps then ask for a name), so strangers learn no names.
    UsersPublic,
    /// One of Jellyfin's unauthenticated media routes.
    Side(SideDoor),
    /// Any other route: Jellyfin's API, `/socket`, `/Startup/*`,
    /// `/Branding/Splashscreen`.
    Api,
}

/// Jellyfin's media routes that have no `[Authorize]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideDoor {
    /// `/Videos/{id}/stream[.{container}]`.
    VideoStream,
    /// `/Audio/{id}/stream[.{container}]`.
    AudioStream,
    /// `/Items/{id}/Images/…` and the other image routes (artists, genres,
    /// persons, studios, users).
    Image,
    /// `/Videos/{id}/{source}/Subtitles/{index}/[{ticks}/]Stream.{format}`.
    Subtitle,
    /// `/Videos/{id}/{source}/Attachments/{index}`.
    Attachment,
    /// The older HLS segments: `/Videos/{id}/hls/{playlist}/{segment}.{ext}`
    /// and `/Audio/{id}/hls/{segment}/stream.{mp3,aac}`.
    HlsSegment,
}

impl Route {
    /// The metrics' and logs' word for it.
    pub fn word(self) -> &'static str {
        match self {
            Route::Public => "public",
            Route::UsersPublic => "users_public",
            Route::Side(SideDoor::VideoStream) => "video_stream",
            Route::Side(SideDoor::AudioStream) => "audio_stream",
            Route::Side(SideDoor::Image) => "image",
            Route::Side(SideDoor::Subtitle) => "subtitle",
            Route::Side(SideDoor::Attachment) => "attachment",
            Route::Side(SideDoor::HlsSegment) => "hls_segment",
            Route::Api => "api",
        }
    }

    /// Every route a refusal can be counted for, in the metrics' order.
    pub const REFUSABLE: [Route; 7] = [
        Route::Side(SideDoor::VideoStream),
        Route::Side(SideDoor::AudioStream),
        Route::Side(SideDoor::Image),
        Route::Side(SideDoor::Subtitle),
        Route::Side(SideDoor::Attachment),
        Route::Side(SideDoor::HlsSegment),
        Route::Api,
    ];

    /// Its place in `REFUSABLE`.
    pub fn index(self) -> usize {
        Route::REFUSABLE
            .iter()
            .position(|d| *d == self)
            .unwrap_or(Route::REFUSABLE.len() - 1)
    }
}

/// Jellyfin's public routes (what a signed-out app needs to show its login
/// screen and sign in), as path patterns: `*` one segment, `**` the rest.
pub const PUBLIC: &[&str] = &[
    "/",
    "/favicon.ico",
    "/web",
    "/web/**",
    "/System/Info/Public",
    "/System/Ping",
    "/Branding/Configuration",
    "/Branding/Css",
    "/Branding/Css.css",
    "/Users/AuthenticateByName",
    "/Users/AuthenticateWithQuickConnect",
    "/Users/*/Authenticate",
    "/Users/ForgotPassword",
    "/Users/ForgotPassword/Pin",
    "/QuickConnect/Enabled",
    "/QuickConnect/Initiate",
    "/QuickConnect/Connect",
];

/// The image routes' first segments (`/{these}/{id}/Images/…`).
const IMAGE_ROOTS: &[&str] = &[
    "items",
    "artists",
    "genres",
    "musicgenres",
    "persons",
    "studios",
    "users",
];

/// Whether `path` matches `pattern`, segment by segment without regard to
/// case, a trailing `/` ignored (`*`: one segment, a final `**`: anything
/// from there on, nothing included).
pub fn matches(pattern: &str, path: &str) -> bool {
    let mut path = segments(path);
    let mut pattern = segments(pattern).peekable();
    while let Some(want) = pattern.next() {
        if want == "**" && pattern.peek().is_none() {
            return true;
        }
        match path.next() {
            Some(got) if want == "*" || want.eq_ignore_ascii_case(got) => {}
            _ => return false,
        }
    }
    path.next().is_none()
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path_segments(path).filter(|s| !s.is_empty())
}

/// The routes open without credentials: Jellyfin's `PUBLIC` and a site's
/// own, matched as `auth_paths` are (every request with the gate on asks).
pub fn public_class(own: &[String]) -> RouteClass {
    let all: Vec<String> = PUBLIC
        .iter()
        .map(ToString::to_string)
        .chain(own.iter().cloned())
        .collect();
    RouteClass::new(&all)
}

/// The gate's route `path` (canonical) is, given the public routes in
/// force (`public_class`).
pub fn route(path: &str, public: &RouteClass) -> Route {
    if public.matches(path) {
        return Route::Public;
    }
    // The segments on the stack. A longer path is none of Jellyfin's side
    // doors (its longest route has 11), and is gated all the same.
    const MOST: usize = 16;
    let mut found = [""; MOST];
    let mut count = 0;
    for segment in segments(path) {
        if count == MOST {
            return Route::Api;
        }
        found[count] = segment;
        count += 1;
    }
    let s = &found[..count];
    let is = |i: usize, word: &str| s.get(i).is_some_and(|x| x.eq_ignore_ascii_case(word));
    let lower_starts = |i: usize, prefix: &str| {
        s.get(i).is_some_and(|x| {
            x.len() >= prefix.len() && x[..prefix.len()].eq_ignore_ascii_case(prefix)
        })
    };
    // `stream` or `stream.{container}`.
    let stream_at = |i: usize| {
        s.get(i).is_some_and(|x| {
            x.eq_ignore_ascii_case("stream")
                || (x.len() > 7 && x[..7].eq_ignore_ascii_case("stream."))
        })
    };
    if s.len() == 2 && is(0, "users") && is(1, "public") {
        return Route::UsersPublic;
    }
    if s.len() == 3 && is(0, "videos") && stream_at(2) {
        return Route::Side(SideDoor::VideoStream);
    }
    if s.len() == 3 && is(0, "audio") && stream_at(2) {
        return Route::Side(SideDoor::AudioStream);
    }
    if s.len() >= 4 && IMAGE_ROOTS.iter().any(|root| is(0, root)) && is(2, "images") {
        return Route::Side(SideDoor::Image);
    }
    if (s.len() == 6 || s.len() == 7)
        && is(0, "videos")
        && is(3, "subtitles")
        && lower_starts(s.len() - 1, "stream.")
    {
        return Route::Side(SideDoor::Subtitle);
    }
    if s.len() == 5 && is(0, "videos") && is(3, "attachments") {
        return Route::Side(SideDoor::Attachment);
    }
    // A segment, not the playlist (which Jellyfin authorizes).
    let playlist = s
        .get(4)
        .is_some_and(|x| x.len() > 5 && x[x.len() - 5..].eq_ignore_ascii_case(".m3u8"));
    if s.len() == 5 && is(0, "videos") && is(2, "hls") && s[4].contains('.') && !playlist {
        return Route::Side(SideDoor::HlsSegment);
    }
    if s.len() == 5 && is(0, "audio") && is(2, "hls") && stream_at(4) {
        return Route::Side(SideDoor::HlsSegment);
    }
    Route::Api
}

#[cfg(test)]
mod tests {
    use super::{matches, public_class, route, Route, SideDoor};

    #[test]
    fn patterns_match_by_segment_without_case() {
        assert!(matches("/Users/*/Authenticate", "/users/abc/authenticate/"));
        assert!(!matches(
            "/Users/*/Authenticate",
            "/users/abc/x/authenticate"
        ));
        assert!(matches("/web/**", "/web/index.html"));
        assert!(matches("/web/**", "/web"));
        assert!(matches("/", "/"));
        assert!(!matches("/", "/x"));
        assert!(!matches("/System/Info/Public", "/System/Info"));
    }

    #[test]
    fn jellyfins_routes_are_told_apart() {
        let none = &public_class(&[]);
        let id = "0123456789abcdef0123456789abcdef";
        for (path, want) in [
            ("/", Route::Public),
            ("/web/index.html", Route::Public),
            ("/Users/authenticatebyname", Route::Public),
            ("/QuickConnect/Connect", Route::Public),
            ("/System/Info/Public", Route::Public),
            ("/users/public", Route::UsersPublic),
            (
                &format!("/Videos/{id}/stream"),
                Route::Side(SideDoor::VideoStream),
            ),
            (
                &format!("/videos/{id}/stream.mkv"),
                Route::Side(SideDoor::VideoStream),
            ),
            (
                &format!("/Audio/{id}/stream.flac"),
                Route::Side(SideDoor::AudioStream),
            ),
            (
                &format!("/Items/{id}/Images/Primary"),
                Route::Side(SideDoor::Image),
            ),
            (
                &format!("/Items/{id}/Images/Backdrop/0/tag/jpg/100/100/0/0"),
                Route::Side(SideDoor::Image),
            ),
            (
                "/Persons/Someone/Images/Primary",
                Route::Side(SideDoor::Image),
            ),
            (
                &format!("/Videos/{id}/{id}/Subtitles/2/Stream.srt"),
                Route::Side(SideDoor::Subtitle),
            ),
            (
                &format!("/Videos/{id}/{id}/Subtitles/2/0/Stream.vtt"),
                Route::Side(SideDoor::Subtitle),
            ),
            (
                &format!("/Videos/{id}/{id}/Attachments/1"),
                Route::Side(SideDoor::Attachment),
            ),
            (
                &format!("/Videos/{id}/hls/pl/seg3.ts"),
                Route::Side(SideDoor::HlsSegment),
            ),
            (
                &format!("/Audio/{id}/hls/seg3/stream.aac"),
                Route::Side(SideDoor::HlsSegment),
            ),
            (&format!("/Videos/{id}/hls1/pl/0.ts"), Route::Api),
            (&format!("/Videos/{id}/master.m3u8"), Route::Api),
            (&format!("/Videos/{id}/hls/pl/stream.m3u8"), Route::Api),
            (&format!("/Audio/{id}/universal"), Route::Api),
            ("/Users/Me", Route::Api),
            ("/socket", Route::Api),
            ("/Startup/Configuration", Route::Api),
            ("/Branding/Splashscreen", Route::Api),
            ("/Sessions/Logout", Route::Api),
        ] {
            assert_eq!(route(path, none), want, "{path}");
        }
        let own = public_class(&["/sso/**".to_string()]);
        assert_eq!(route("/SSO/OID/start/x", &own), Route::Public);
        assert_eq!(route("/SSO/OID/start/x", none), Route::Api);
    }
}
