//! The swarm scheduler. Filled by the swarm-core work.
