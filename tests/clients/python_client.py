"""jellyfin-apiclient-python (from PyPI) as an app uses it: connect, sign in,
the library, the film's PlaybackInfo, and the stream URL the library builds
(with ``ApiKey``). Prints one JSON line of what came back; a refusal ends the
run with the error on stderr.

    python3 python_client.py https://localhost:PORT USER PASSWORD

The edge's local CA comes in through REQUESTS_CA_BUNDLE.
"""

import json
import sys

from jellyfin_apiclient_python import JellyfinClient
from jellyfin_apiclient_python.connection_manager import CONNECTION_STATE

server, user, password = sys.argv[1:4]

client = JellyfinClient()
client.config.app("drawbridge test", "1.0.0", "python", "python-apiclient-test")
client.config.data["auth.ssl"] = True
state = client.auth.connect_to_address(server)
if state["State"] != CONNECTION_STATE["ServerSignIn"]:
    sys.exit(f"connect_to_address: {state}")
signed_in = client.auth.login(server, user, password)
if not signed_in.get("AccessToken"):
    sys.exit(f"login refused: {signed_in}")

items = client.jellyfin.user_items()
film = next(item for item in items["Items"] if item["MediaType"] == "Video")
play_info = client.jellyfin.get_play_info(film["Id"], {"Name": "drawbridge test"})
print(
    json.dumps(
        {
            "token": signed_in["AccessToken"],
            "items": len(items["Items"]),
            "media_sources": len(play_info["MediaSources"]),
            "video_url": client.jellyfin.video_url(film["Id"]),
        }
    )
)
