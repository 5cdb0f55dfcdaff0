-- shoal store schema, version 1.
-- Content ids are 32-byte BLOBs; file system paths are BLOBs holding the OS bytes
-- (Unix paths need not be UTF-8); paths inside a collection are UTF-8 TEXT.

CREATE TABLE shares (
    pk          INTEGER PRIMARY KEY,
    id          BLOB NOT NULL UNIQUE CHECK (length(id) = 32),
    kind        TEXT NOT NULL CHECK (kind IN ('file', 'collection')),
    name        TEXT NOT NULL,
    path        BLOB NOT NULL,
    size        INTEGER NOT NULL CHECK (size >= 0),
    files       INTEGER NOT NULL CHECK (files >= 0),
    visibility  TEXT NOT NULL CHECK (visibility IN ('public', 'unlisted', 'private')),
    added_at    INTEGER NOT NULL,
    manifest    BLOB
);

-- The files of a collection share; `mtime_ns` lets a rescan skip unchanged files.
CREATE TABLE share_files (
    pk        INTEGER PRIMARY KEY,
    share     INTEGER NOT NULL REFERENCES shares(pk) ON DELETE CASCADE,
    path      TEXT NOT NULL,
    size      INTEGER NOT NULL CHECK (size >= 0),
    id        BLOB NOT NULL CHECK (length(id) = 32),
    mtime_ns  INTEGER,
    UNIQUE (share, path)
);
CREATE INDEX share_files_by_id ON share_files(id);

-- Outboards known to this node. `file` is the outboard's file name under
-- `outboards/`, or NULL for a content of at most one piece, whose outboard is
-- derived from its id alone.
CREATE TABLE outboards (
    id          BLOB PRIMARY KEY CHECK (length(id) = 32),
    piece_size  INTEGER NOT NULL,
    size        INTEGER NOT NULL CHECK (size >= 0),
    file        TEXT
);

-- Downloads in progress (or finished), one per partial file. `bitfield` holds one
-- bit per piece, most significant bit first; a set bit means the piece is verified
-- and its bytes are durable in the partial file.
CREATE TABLE downloads (
    pk          INTEGER PRIMARY KEY,
    id          BLOB NOT NULL CHECK (length(id) = 32),
    kind        TEXT NOT NULL CHECK (kind IN ('file', 'collection')),
    dest        BLOB NOT NULL,
    part        BLOB NOT NULL UNIQUE,
    piece_size  INTEGER NOT NULL,
    length      INTEGER NOT NULL CHECK (length >= 0),
    bitfield    BLOB NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('active', 'paused', 'complete', 'failed')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX downloads_by_id ON downloads(id);

-- Peers seen; `addrs` is a newline-separated list of multiaddrs.
CREATE TABLE peers (
    peer_id    TEXT PRIMARY KEY,
    addrs      TEXT NOT NULL,
    last_seen  INTEGER NOT NULL
);

-- Full-text index over share names (rowid = -shares.pk) and collection file
-- paths (rowid = share_files.pk), kept in sync by the triggers below.
CREATE VIRTUAL TABLE search_index USING fts5(
    text,
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER shares_index_insert AFTER INSERT ON shares BEGIN
    INSERT INTO search_index(rowid, text) VALUES (-new.pk, new.name);
END;
CREATE TRIGGER shares_index_rename AFTER UPDATE OF name ON shares BEGIN
    UPDATE search_index SET text = new.name WHERE rowid = -old.pk;
END;
CREATE TRIGGER shares_index_delete AFTER DELETE ON shares BEGIN
    DELETE FROM search_index WHERE rowid = -old.pk;
END;
CREATE TRIGGER share_files_index_insert AFTER INSERT ON share_files BEGIN
    INSERT INTO search_index(rowid, text) VALUES (new.pk, new.path);
END;
CREATE TRIGGER share_files_index_delete AFTER DELETE ON share_files BEGIN
    DELETE FROM search_index WHERE rowid = old.pk;
END;
