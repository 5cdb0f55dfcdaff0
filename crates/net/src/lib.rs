//! shoal's networking: the libp2p control plane and the TCP+TLS fast path.
//!
//! Empty until the networked-node work lands; nothing here pretends to work yet.
