"""Every route of the app is in the service's one list of routes (``service.http.routes.rules``), exactly once and
with the kind the guards give it: the cross-cutting tests iterate over that list, so an unlisted route would
escape them."""

from __future__ import annotations

from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Route as StarletteRoute

from service.http import limits
from service.http.routes.rules import ROUTES, Body, Kind
from service.http.routes.ui import PAGE_PATHS
from tests.reliability import routes


def app_routes(client: TestClient) -> set[tuple[str, str]]:
    found = set()
    for context in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        assert isinstance(context.route, StarletteRoute), context.route  # no mounts or websockets: they would escape
        found |= {(method, context.path) for method in (context.methods or set()) - {"HEAD"}}
    return found


def test_every_app_route_is_listed_once(corpus_client: TestClient) -> None:
    listed = [(route.method, route.path) for route in ROUTES]
    assert len(listed) == len(set(listed)), "a route listed twice"
    served = app_routes(corpus_client)
    assert served - set(listed) == set(), "app routes in none of the lists of service.http.routes.rules"
    assert set(listed) - served == set(), "listed routes the app does not serve"


def test_the_guards_take_their_paths_from_the_list() -> None:
    assert routes.PROBES and set(routes.PROBES) == limits.PROBE_PATHS
    assert [r.path for r in ROUTES if r.kind is Kind.METRICS] == [limits.METRICS_PATH]
    templates = [r.path.split("{")[0] for r in ROUTES if r.kind is Kind.PAGE]
    for page in PAGE_PATHS:  # every open page or asset is served by a listed page route
        assert any(page == t or (t.endswith("/") and page.startswith(t)) for t in templates), page


def test_every_inference_route_reads_a_body_the_tests_can_send() -> None:
    for route in routes.INFERENCE:
        assert route.method == "POST" and route.bodies, route
        routes.file_request(route, b"x")  # raises for a body format the cross-cutting tests cannot send
    for route in ROUTES:
        assert route.kind is Kind.INFERENCE or not route.bodies, route
    assert {body for _, body in routes.JSON_ROUTES} == {Body.TFSERVING_JSON, Body.OIP}
