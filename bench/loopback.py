"""The HTTPS session the bench scripts use: loopback only, the server's own
certificate accepted, Basic credentials, no proxies from the environment."""
import urllib.parse

import requests


def session(url, user, quiet=False):
    """A session for `url` as `user` (USER:PASSWORD); prints the archive's
    size unless `quiet`."""
    host = urllib.parse.urlparse(url).hostname
    assert host == "localhost" or host.startswith("127."), "loopback only"
    requests.packages.urllib3.disable_warnings()
    s = requests.Session()
    s.trust_env, s.verify = False, False
    s.auth = tuple(user.split(":", 1))
    if not quiet:
        total = s.get(f"{url}/api/statistics").json()
        print(f"{total['studies']:,} studies, {total['instances']:,} instances")
    return s
