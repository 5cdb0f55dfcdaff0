//! The shoal node: wires store, swarm and net together behind one `Api`.
//!
//! Empty until the networked-node work lands; nothing here pretends to work yet.
