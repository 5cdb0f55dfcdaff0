//! The canonical manifest of a collection. (Being written.)
