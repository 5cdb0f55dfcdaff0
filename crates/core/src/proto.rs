//! The transfer protocol messages and codec. (Being written.)
