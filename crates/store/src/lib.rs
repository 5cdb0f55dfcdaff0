//! Verified piece storage and the SQLite database.
