-- The tenant portal: one-use links and the browser sessions they open.
--
-- Only SHA-256 hashes of the link and session tokens are stored (like API keys): a copy
-- of the database lets nobody into a portal. Rows are never deleted by the service: a
-- used link keeps `used_at`, a signed-out session keeps `ended_at`.

CREATE TABLE portal_links (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    id         uuid NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    -- Who asked for the link (`admin`, `api_key:<id>`).
    actor      text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    -- Set once, by the request that opened the link: a link works once.
    used_at    timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE portal_sessions (
    tenant_id  uuid NOT NULL,
    id         uuid NOT NULL,
    link_id    uuid NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    -- The CSRF token every form of this session carries (not a credential on its own:
    -- it is useless without the session cookie).
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    ended_at   timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, link_id) REFERENCES portal_links (tenant_id, id)
);
