// Jellyfin's TypeScript SDK (@jellyfin/sdk, from the npm registry) as an
// app uses it: the server's public info, sign in, the library, the film's
// PlaybackInfo, and its poster fetched the way an app's image loader does —
// by the URL the SDK builds, without a token. Prints one JSON line of what
// came back; any refusal ends the run with the error on stderr.
//
//     node node_client.mjs https://localhost:PORT USER PASSWORD
//
// The edge's local CA comes in through NODE_EXTRA_CA_CERTS.

import { Jellyfin } from '@jellyfin/sdk';
import {
    getImageApi,
    getLibraryApi,
    getMediaInfoApi,
    getSystemApi
} from '@jellyfin/sdk/lib/utils/api/index.js';

const [server, user, password] = process.argv.slice(2);

const jellyfin = new Jellyfin({
    clientInfo: { name: 'drawbridge test', version: '1.0.0' },
    deviceInfo: { name: 'node', id: 'node-sdk-test' }
});
const api = jellyfin.createApi(server);

const info = await getSystemApi(api).getPublicSystemInfo();
const signIn = await api.authenticateUserByName(user, password);
const userId = signIn.data.User.Id;
const items = await getLibraryApi(api).getItems({ userId });
const film = items.data.Items.find((item) => item.MediaType === 'Video');
const playback = await getMediaInfoApi(api).getPostedPlaybackInfo({
    itemId: film.Id,
    userId,
    playbackInfoDto: {}
});
const poster = getImageApi(api).getItemImageUrlById(film.Id, 'Primary');
const image = await fetch(poster);

console.log(JSON.stringify({
    server: info.data.ServerName,
    token: api.accessToken,
    items: items.data.Items.length,
    media_sources: playback.data.MediaSources.length,
    poster,
    poster_status: image.status,
    poster_bytes: (await image.arrayBuffer()).byteLength
}));
