-- shoal store schema, version 2: the modification time of a single-file share, so
-- that sharing the same unchanged file again skips hashing it (as `share_files`
-- already allows for the files of a folder). NULL: never reused.
ALTER TABLE shares ADD COLUMN mtime_ns INTEGER;
