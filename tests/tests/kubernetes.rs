//! The Kubernetes path: the kustomize base validates strictly and lists its
//! resources, the pod's security contexts are what the design needs and each field
//! says why, the ConfigMap's configs are valid for the broker and the front, the
//! seccomp profile lets the jail build namespaces, and the image's build script
//! stages a root that runs (no container engine here: CI runs the script itself).

#![allow(clippy::expect_used)]

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use codejail_tests::{bin, bin_dir, describe, repo};

fn k8s() -> PathBuf {
    repo().join("deploy/kubernetes")
}

#[test]
fn manifests_validate_strictly_and_configs_are_valid() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(k8s().join("validate.sh"))
        .arg("--extract-config")
        .arg(dir.path())
        .output()
        .expect("run validate.sh");
    assert!(out.status.success(), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    for file in [
        "configmap.yaml",
        "deployment.yaml",
        "service.yaml",
        "hpa.yaml",
        "pdb.yaml",
        "networkpolicy.yaml",
    ] {
        assert!(
            said.contains(&format!("INFO {file} passed")),
            "{file}: {said}"
        );
    }

    // The broker's config parses (exit 2 = invalid); here it cannot hold its layers
    // (its jail stage path is the image's), which is exit 1 with the reason.
    let out = Command::new(bin("codejail-broker"))
        .arg("check-config")
        .arg(dir.path().join("broker.toml"))
        .output()
        .expect("check-config");
    assert_ne!(out.status.code(), Some(2), "{}", describe(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("60000-60063"),
        "run_ids inside the pod's range: {}",
        describe(&out)
    );
    assert!(
        report.contains("cgroups") && report.contains("optional"),
        "{report}"
    );

    let http = codejail_http::Config::from_file(&dir.path().join("http.toml"))
        .unwrap_or_else(|e| panic!("http.toml: {e}"));
    http.validate().expect("http.toml validates");
    assert!(http.allow_non_loopback, "the Service must reach the pod");
    assert!(
        http.removed_keys().is_empty(),
        "the front repeats none of broker.toml's limits: {:?}",
        http.removed_keys()
    );
}

#[test]
fn a_resource_missing_from_the_kustomization_fails_validation() {
    // The copies are run through bash, not exec'd: a file this process just wrote may
    // still be open for writing in a child another test thread forked meanwhile
    // (execve would fail with ETXTBSY).
    let dir = tempfile::tempdir().expect("tmp");
    for e in fs::read_dir(k8s()).expect("read").filter_map(Result::ok) {
        if e.file_type().expect("type").is_file() {
            fs::copy(e.path(), dir.path().join(e.file_name())).expect("copy");
        }
    }
    fs::write(
        dir.path().join("extra.yaml"),
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n",
    )
    .expect("write");
    let out = Command::new("bash")
        .arg(dir.path().join("validate.sh"))
        .output()
        .expect("run");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("extra.yaml is not in kustomization.yaml"),
        "{}",
        describe(&out)
    );
    fs::remove_file(dir.path().join("extra.yaml")).expect("rm");
    let text = fs::read_to_string(dir.path().join("deployment.yaml")).expect("read");
    fs::write(
        dir.path().join("deployment.yaml"),
        text.replace("hostUsers: false", "hostUser: false"),
    )
    .expect("write");
    let out = Command::new("bash")
        .arg(dir.path().join("validate.sh"))
        .output()
        .expect("run");
    assert!(!out.status.success(), "--strict refuses a misspelt field");
}

/// `(indent, text)` of each line.
fn lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .map(|l| (l.len() - l.trim_start().len(), l.trim()))
        .collect()
}

/// For every `securityContext:` block: each of its own fields (one indent level below
/// it) with the comment line directly above it; deeper lines belong to their field.
fn security_context_fields(text: &str) -> Vec<(String, bool)> {
    let ls = lines(text);
    let mut out = Vec::new();
    for (i, &(indent, t)) in ls.iter().enumerate() {
        if t != "securityContext:" {
            continue;
        }
        let mut field_indent = None;
        for j in i + 1..ls.len() {
            let (ind, line) = ls[j];
            if line.is_empty() {
                continue;
            }
            if ind <= indent {
                break;
            }
            if line.starts_with('#') {
                continue;
            }
            let fi = *field_indent.get_or_insert(ind);
            if ind == fi {
                let commented = ls[..j]
                    .iter()
                    .rev()
                    .find(|(_, l)| !l.is_empty())
                    .is_some_and(|(_, l)| l.starts_with('#'));
                out.push((line.to_string(), commented));
            }
        }
    }
    out
}

#[test]
fn security_contexts_are_as_designed_and_each_field_says_why() {
    let text = fs::read_to_string(k8s().join("deployment.yaml")).expect("deployment");
    let fields = security_context_fields(&text);
    assert!(fields.len() >= 15, "{fields:?}");
    for (field, commented) in &fields {
        assert!(
            commented,
            "securityContext field without a comment: {field}"
        );
    }
    let ls: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(
        !ls.iter()
            .any(|l| !l.starts_with('#') && l.contains("privileged")),
        "no privileged field"
    );
    assert!(ls.contains(&"hostUsers: false"));
    let broker_caps = "capabilities:\n              drop:\n                - ALL\n              add:\n                - SETUID\n                - SETGID\n";
    assert!(
        text.contains(broker_caps),
        "broker: drop ALL, add SETUID SETGID"
    );
    assert_eq!(text.matches("- ALL").count(), 2, "both containers drop ALL");
    assert!(text.contains("type: Localhost\n          localhostProfile: profiles/codejail.json"));
    assert!(text.contains("path: /health/"), "readiness on /health/");
    assert!(text.contains("path: /live"), "liveness on /live");

    let profile: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(k8s().join("seccomp/codejail.json")).expect("profile"),
    )
    .expect("the seccomp profile is JSON");
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ALLOW");
    let denied: Vec<&str> = profile["syscalls"]
        .as_array()
        .expect("syscalls")
        .iter()
        .filter(|r| r["action"] == "SCMP_ACT_ERRNO")
        .flat_map(|r| r["names"].as_array().expect("names").iter())
        .map(|n| n.as_str().expect("name"))
        .collect();
    for needed in [
        "unshare",
        "mount",
        "umount2",
        "pivot_root",
        "setns",
        "clone",
        "clone3",
        "seccomp",
        "landlock_create_ruleset",
        "landlock_restrict_self",
        "sethostname",
        "prctl",
    ] {
        assert!(!denied.contains(&needed), "the jail stage needs {needed}");
    }
    for refused in [
        "kexec_load",
        "init_module",
        "finit_module",
        "bpf",
        "keyctl",
        "open_by_handle_at",
    ] {
        assert!(denied.contains(&refused), "{refused} is refused");
    }

    let policy = fs::read_to_string(k8s().join("networkpolicy.yaml")).expect("policy");
    assert!(
        policy.contains("    - Egress\n") && policy.contains("  egress: []\n"),
        "no egress"
    );
}

#[test]
fn container_build_script_stages_an_image_root() {
    let root = tempfile::Builder::new()
        .prefix("codejail-image-")
        .tempdir_in("/var/tmp")
        .expect("tmp");
    let bins = bin_dir();
    let out = Command::new(repo().join("deploy/container/build.sh"))
        .arg(root.path())
        .arg("--bin-dir")
        .arg(&bins)
        .arg("--skip-venv")
        .output()
        .expect("run build.sh");
    assert!(out.status.success(), "{}", describe(&out));
    for exe in [
        "usr/local/bin/codejail-broker",
        "usr/local/bin/codejail-client",
        "usr/local/bin/codejail-http",
        "usr/local/lib/codejail/codejail-jail",
    ] {
        let p = root.path().join(exe);
        let out = Command::new(&p).arg("--version").output();
        let runs =
            out.is_ok_and(|o| o.status.success()) || exe.ends_with("codejail-jail") && p.is_file();
        assert!(runs, "{exe} is staged and runs");
    }
    for dir in ["run/codejail", "var/lib/codejail", "tmp", "etc/codejail"] {
        assert!(root.path().join(dir).is_dir(), "{dir}");
    }
    let passwd = fs::read_to_string(root.path().join("etc/passwd.codejail")).expect("passwd");
    assert!(
        passwd.starts_with("codejail-http:x:10001:10001:"),
        "{passwd}"
    );
    let containerfile =
        fs::read_to_string(repo().join("deploy/container/Containerfile")).expect("Containerfile");
    assert!(containerfile.contains("RUN deploy/container/build.sh /image"));
}
