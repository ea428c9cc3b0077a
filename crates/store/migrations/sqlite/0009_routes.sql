-- Release routes: a name clients put in `model`, pointing at a stable deployment and, while a
-- revision is tried, a canary deployment with a share of the callers; and every change of a
-- route with its evidence (the promotion history).
CREATE TABLE routes (
    name TEXT PRIMARY KEY,
    stable TEXT NOT NULL,
    canary TEXT,
    canary_percent INTEGER NOT NULL,
    rollout TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE route_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    route TEXT NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    reason TEXT NOT NULL,
    evidence TEXT NOT NULL
);
CREATE INDEX route_history_route ON route_history (route, id);
