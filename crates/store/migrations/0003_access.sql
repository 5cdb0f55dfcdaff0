-- shoal store schema, version 3: access control.
-- Peer ids are their base58 text; invite ids 16-byte BLOBs.

-- Peers allowed to fetch a private share (and every file in it).
CREATE TABLE share_allow (
    share     INTEGER NOT NULL REFERENCES shares(pk) ON DELETE CASCADE,
    peer_id   TEXT NOT NULL,
    added_at  INTEGER NOT NULL,
    PRIMARY KEY (share, peer_id)
);

-- Invites this node issued. `encoded` is the signed invite (what a ticket
-- carries); the other columns repeat its fields for listing. An invite whose id
-- is not here is treated as revoked.
CREATE TABLE invites (
    id          BLOB PRIMARY KEY CHECK (length(id) = 16),
    content     BLOB NOT NULL CHECK (length(content) = 32),
    encoded     BLOB NOT NULL,
    recipient   TEXT,
    expires_at  INTEGER,
    max_uses    INTEGER,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX invites_by_content ON invites(content);

-- The distinct peers that used an invite (a use is counted once per peer).
CREATE TABLE invite_uses (
    invite    BLOB NOT NULL REFERENCES invites(id) ON DELETE CASCADE,
    peer_id   TEXT NOT NULL,
    first_at  INTEGER NOT NULL,
    PRIMARY KEY (invite, peer_id)
);

-- Who asked for what, and the answer; bounded (the oldest rows are dropped).
-- `share` is the share the request was decided under (NULL if none holds it).
CREATE TABLE access_log (
    pk        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    content   BLOB NOT NULL CHECK (length(content) = 32),
    share     BLOB,
    peer_id   TEXT NOT NULL,
    addr      TEXT,
    allowed   INTEGER NOT NULL CHECK (allowed IN (0, 1)),
    reason    TEXT NOT NULL,
    bytes     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX access_log_by_share ON access_log(share);
CREATE INDEX access_log_by_content ON access_log(content);
