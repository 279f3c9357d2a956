//! The etcd roles of a Switchback cluster under etcd authentication: what each component
//! may read and write under the cluster's key prefix, so that a worker record can be
//! written only with a worker's credentials. `sbctl etcd-roles` creates them; the operator
//! then creates one user per component and grants it its role (`etcdctl user add`,
//! `etcdctl user grant-role`). docs/SECURITY.md has the table.

use etcd_client::{Client, Permission};
use switchback_proto::Keys;

/// Read or read-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

/// One permission of a role: `access` to every key starting with `prefix` (a single key
/// when `exact`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub access: Access,
    pub key: String,
    pub exact: bool,
}

/// A role and its permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdRole {
    pub name: &'static str,
    pub grants: Vec<Grant>,
}

fn prefix(access: Access, key: String) -> Grant {
    Grant {
        access,
        key,
        exact: false,
    }
}

/// The roles for the cluster under `keys`:
/// - `switchback-worker`: writes its record under `workers/` (leased), reads and clears its
///   drain mark under `drain/`, reads the controller election to find the leader;
/// - `switchback-controller`: reads everything under the prefix, writes drain marks and
///   campaigns in the election under `controller/`;
/// - `switchback-router`: reads everything under the prefix (records, the policy, the
///   election), writes nothing;
/// - `switchback-operator`: reads everything, writes the routing policy.
pub fn roles(keys: &Keys) -> Vec<EtcdRole> {
    let all = keys.prefix().to_owned();
    let election = keys
        .controller_election()
        .rsplit_once('/')
        .map(|(dir, _)| format!("{dir}/"))
        .unwrap_or_else(|| keys.controller_election());
    vec![
        EtcdRole {
            name: "switchback-worker",
            grants: vec![
                prefix(Access::ReadWrite, keys.workers()),
                prefix(Access::ReadWrite, keys.drains()),
                prefix(Access::Read, election.clone()),
            ],
        },
        EtcdRole {
            name: "switchback-controller",
            grants: vec![
                prefix(Access::Read, all.clone()),
                prefix(Access::ReadWrite, keys.drains()),
                prefix(Access::ReadWrite, election),
            ],
        },
        EtcdRole {
            name: "switchback-router",
            grants: vec![prefix(Access::Read, all.clone())],
        },
        EtcdRole {
            name: "switchback-operator",
            grants: vec![
                prefix(Access::Read, all),
                Grant {
                    access: Access::ReadWrite,
                    key: keys.policy(),
                    exact: true,
                },
            ],
        },
    ]
}

impl Grant {
    fn permission(&self) -> Permission {
        let p = match self.access {
            Access::Read => Permission::read(self.key.as_bytes()),
            Access::ReadWrite => Permission::read_write(self.key.as_bytes()),
        };
        if self.exact { p } else { p.with_prefix() }
    }

    /// How `etcdctl role grant-permission` writes it.
    pub fn etcdctl(&self, role: &str) -> String {
        let access = match self.access {
            Access::Read => "read",
            Access::ReadWrite => "readwrite",
        };
        let prefix = if self.exact { "" } else { "--prefix=true " };
        format!(
            "etcdctl role grant-permission {prefix}{role} {access} '{}'",
            self.key
        )
    }
}

/// Creates the roles that do not exist yet and grants every permission of [`roles`]
/// (granting one again is a no-op). Needs etcd's root user, or one with its role.
pub async fn apply(client: &mut Client, keys: &Keys) -> Result<Vec<EtcdRole>, etcd_client::Error> {
    let existing = client.role_list().await?.roles().to_vec();
    let roles = roles(keys);
    for role in &roles {
        if !existing.iter().any(|r| r == role.name) {
            client.role_add(role.name).await?;
        }
        for grant in &role.grants {
            client
                .role_grant_permission(role.name, grant.permission())
                .await?;
        }
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_workers_write_worker_records() {
        let keys = Keys::new("/sb/");
        let roles = roles(&keys);
        let writes = |key: &str| {
            roles
                .iter()
                .filter(|r| {
                    r.grants.iter().any(|g| {
                        g.access == Access::ReadWrite
                            && if g.exact {
                                key == g.key
                            } else {
                                key.starts_with(&g.key)
                            }
                    })
                })
                .map(|r| r.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(writes(&keys.worker("w1")), ["switchback-worker"]);
        assert_eq!(
            writes(&keys.drain("w1")),
            ["switchback-worker", "switchback-controller"]
        );
        assert_eq!(
            writes(&format!("{}/lease", keys.controller_election())),
            ["switchback-controller"]
        );
        assert_eq!(writes(&keys.policy()), ["switchback-operator"]);
        assert!(writes("/sb/anything-else").is_empty());
        // Nothing outside the cluster's prefix.
        assert!(
            roles
                .iter()
                .flat_map(|r| &r.grants)
                .all(|g| g.key.starts_with("/sb/"))
        );
        assert_eq!(
            roles[0].grants[0].etcdctl("switchback-worker"),
            "etcdctl role grant-permission --prefix=true switchback-worker readwrite '/sb/workers/'"
        );
    }
}
