//! The routing policy document, as a router reads it from etcd (`<prefix>/policy`, any
//! bytes an etcd writer put there) or from its config file: UTF-8, then
//! `Policy::from_yaml`. A policy that validates must pass `check()` and must survive a
//! round trip through YAML and JSON (operators read it with `etcdctl get`, edit it and put
//! it back) to an equal policy.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchback_router::policy::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::from_yaml(text) else {
        return;
    };
    assert_eq!(policy.check(), Ok(()));
    let yaml = serde_yaml::to_string(&policy).expect("a policy serialises to YAML");
    let again = Policy::from_yaml(&yaml)
        .unwrap_or_else(|e| panic!("the policy's own YAML does not validate: {e}\n{yaml}"));
    assert_eq!(again, policy, "YAML round trip changed the policy:\n{yaml}");
    let json = serde_json::to_string(&policy).expect("a policy serialises to JSON");
    let again = Policy::from_yaml(&json)
        .unwrap_or_else(|e| panic!("the policy's own JSON does not validate: {e}\n{json}"));
    assert_eq!(again, policy, "JSON round trip changed the policy:\n{json}");
});
