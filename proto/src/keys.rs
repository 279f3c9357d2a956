//! The etcd key layout, in one place. Everything lives under one prefix
//! (`/switchback/v1/` by default) so that two clusters can share an etcd.

/// Default prefix of every key Switchback writes.
pub const DEFAULT_PREFIX: &str = "/switchback/v1/";

/// Builds the keys under a cluster's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// `prefix` gets a trailing `/` if it lacks one.
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Prefix of all worker records; watch it for joins and leaves.
    pub fn workers(&self) -> String {
        format!("{}workers/", self.prefix)
    }

    /// A worker's record, bound to its lease.
    pub fn worker(&self, worker_id: &str) -> String {
        format!("{}workers/{worker_id}", self.prefix)
    }

    /// The worker id in a key under [`Keys::workers`], if it is one.
    pub fn worker_id_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        let id = key.strip_prefix(&self.prefix)?.strip_prefix("workers/")?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }

    /// Prefix of operator drains; `drain/<id>` exists while worker `id` is drained.
    pub fn drains(&self) -> String {
        format!("{}drain/", self.prefix)
    }

    /// The drain mark of one worker (JSON: reason, who, when). Not bound to a lease: a
    /// drain lasts until `sbctl undrain` or the worker's clean shutdown.
    pub fn drain(&self, worker_id: &str) -> String {
        format!("{}drain/{worker_id}", self.prefix)
    }

    /// The worker id in a key under [`Keys::drains`], if it is one.
    pub fn drained_id_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        let id = key.strip_prefix(&self.prefix)?.strip_prefix("drain/")?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }

    /// The cluster's routing policy (YAML), read by every router; absent: each router's
    /// config file decides.
    pub fn policy(&self) -> String {
        format!("{}policy", self.prefix)
    }

    /// The name of the controllers' etcd election; its leader value is the leader's
    /// gRPC address.
    pub fn controller_election(&self) -> String {
        format!("{}controller/leader", self.prefix)
    }
}

impl Default for Keys {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_stable() {
        let keys = Keys::default();
        assert_eq!(keys.workers(), "/switchback/v1/workers/");
        assert_eq!(keys.worker("w1"), "/switchback/v1/workers/w1");
        assert_eq!(
            keys.controller_election(),
            "/switchback/v1/controller/leader"
        );
    }

    #[test]
    fn prefix_gets_a_trailing_slash() {
        assert_eq!(Keys::new("/a/b").worker("x"), "/a/b/workers/x");
    }

    #[test]
    fn worker_id_is_parsed_back() {
        let keys = Keys::new("/p/");
        assert_eq!(keys.worker_id_of("/p/workers/abc"), Some("abc"));
        assert_eq!(keys.worker_id_of("/p/workers/"), None);
        assert_eq!(keys.worker_id_of("/p/workers/a/b"), None);
        assert_eq!(keys.worker_id_of("/q/workers/abc"), None);
        assert_eq!(keys.worker_id_of("/p/drain/abc"), None);
        assert_eq!(keys.drained_id_of("/p/drain/abc"), Some("abc"));
        assert_eq!(keys.drained_id_of("/p/workers/abc"), None);
        assert_eq!(keys.drain("abc"), "/p/drain/abc");
    }
}
