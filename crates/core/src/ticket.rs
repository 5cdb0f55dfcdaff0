//! Tickets. (Being written.)
