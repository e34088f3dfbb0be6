//! Argument parsing as docs/contracts.md states it, and the inputs each command reads.

use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use codejail_client::{JailRequest, SafeExecOptions};

use crate::exec::{build_request, exec_config, ExecArgs};
use crate::safe_exec::{safe_exec_inputs, SafeExecArgs};
use crate::{Cli, Command};

#[test]
fn cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("codejail-client").chain(args.iter().copied()))
}

fn exec_args(args: &[&str]) -> ExecArgs {
    match parse(args).expect("parses").command {
        Command::Exec(a) => *a,
        other => panic!("not exec: {other:?}"),
    }
}

#[test]
fn exec_arguments_parse_as_in_the_contract() {
    let a = exec_args(&[
        "exec",
        "--limit",
        "CPU=3",
        "--limit",
        "VMEM=536870912",
        "--context",
        "course-v1:x",
        "--slug",
        "s",
        "--file",
        "lib",
        "--extra-file",
        "data.txt=/tmp/d",
        "--json",
        "-c",
        "print(1)",
        "--",
        "a",
        "-b",
    ]);
    assert_eq!(a.limits, [("CPU".into(), 3), ("VMEM".into(), 536870912)]);
    assert_eq!(a.context.as_deref(), Some("course-v1:x"));
    assert_eq!(a.files, [PathBuf::from("lib")]);
    assert_eq!(
        a.extra_files,
        [("data.txt".into(), PathBuf::from("/tmp/d"))]
    );
    assert!(a.json);
    assert_eq!(a.code.as_deref(), Some("print(1)"));
    assert_eq!(a.args, ["a", "-b"]);
    assert_eq!(a.command, "python");

    let a = exec_args(&[
        "--socket", "/s", "exec", "--file", "prog.py", "--", "prog.py", "x",
    ]);
    assert_eq!(a.code, None);
    assert_eq!(a.args, ["prog.py", "x"]);
    let cli = parse(&["exec", "--socket", "/t", "-c", "x"]).expect("global socket");
    assert_eq!(cli.socket, Some(PathBuf::from("/t")));
}

#[test]
fn bad_exec_arguments_are_refused() {
    for bad in [
        &["exec", "--limit", "CPU", "-c", "x"][..],
        &["exec", "--limit", "CPU=-1", "-c", "x"],
        &["exec", "--limit", "CPU=1.5", "-c", "x"],
        &["exec", "--extra-file", "noequals", "-c", "x"],
        &["exec", "-c", "x", "--code-file", "f"],
        &["status", "--bogus"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?} accepted");
    }
    let a = exec_args(&["exec", "--json"]);
    let err = build_request(a).expect_err("nothing to run");
    assert!(err.to_string().contains("nothing to run"), "{err}");
}

fn safe_exec_args(args: &[&str]) -> SafeExecArgs {
    match parse(args).expect("parses").command {
        Command::SafeExec(a) => *a,
        other => panic!("not safe-exec: {other:?}"),
    }
}

#[test]
fn safe_exec_arguments_parse_as_in_the_contract() {
    let a = safe_exec_args(&[
        "safe-exec",
        "--globals-file",
        "g.json",
        "--file",
        "hello.txt",
        "--file",
        "pylib",
        "--python-path",
        "pylib",
        "--python-path",
        "python_lib.zip",
        "--extra-file",
        "python_lib.zip=/tmp/lib.zip",
        "--context",
        "course-v1:x",
        "--slug",
        "s",
        "--unsafe",
        "-c",
        "a = 1",
    ]);
    assert_eq!(a.globals_file, Some(PathBuf::from("g.json")));
    assert_eq!(
        a.files,
        [PathBuf::from("hello.txt"), PathBuf::from("pylib")]
    );
    assert_eq!(
        a.python_path,
        [PathBuf::from("pylib"), PathBuf::from("python_lib.zip")]
    );
    assert_eq!(
        a.extra_files,
        [("python_lib.zip".into(), PathBuf::from("/tmp/lib.zip"))]
    );
    assert_eq!(a.context.as_deref(), Some("course-v1:x"));
    assert_eq!(a.slug.as_deref(), Some("s"));
    assert!(a.unsafe_local);
    assert_eq!(a.code.as_deref(), Some("a = 1"));

    let a = safe_exec_args(&["safe-exec", "--code-file", "prog.py"]);
    assert_eq!(a.code_file, Some(PathBuf::from("prog.py")));
    assert!(!a.unsafe_local && a.globals_file.is_none());

    for bad in [
        &["safe-exec"][..],
        &["safe-exec", "-c", "x", "--code-file", "f"],
        &["safe-exec", "--extra-file", "noequals", "-c", "x"],
        &["safe-exec", "-c", "x", "extra-positional"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn safe_exec_reads_its_inputs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let globals = tmp.path().join("g.json");
    std::fs::write(
        &globals,
        br#"{"n": NaN, "big": 123456789012345678901234567890}"#,
    )
    .expect("write");
    let code = tmp.path().join("prog.py");
    std::fs::write(&code, b"a = 1\n").expect("write");
    let mut a = safe_exec_args(&["safe-exec", "--code-file", "x"]);
    a.code_file = Some(code);
    a.globals_file = Some(globals.clone());
    let (code, g, opts) = safe_exec_inputs(&a).expect("inputs");
    assert_eq!(code, "a = 1\n");
    assert_eq!(
        g.to_json(),
        r#"{"n": NaN, "big": 123456789012345678901234567890}"#
    );
    assert_eq!(opts, SafeExecOptions::default());

    std::fs::write(&globals, b"[1]").expect("write");
    let err = safe_exec_inputs(&a).expect_err("not an object");
    assert!(err.to_string().contains("not a JSON object"), "{err}");
    std::fs::write(&globals, b"{").expect("write");
    let err = safe_exec_inputs(&a).expect_err("not JSON");
    assert!(format!("{err:#}").contains("not valid JSON"), "{err:#}");
}

#[test]
fn realtime_stretches_the_total_timeout() {
    let req = JailRequest::python("x");
    assert_eq!(
        exec_config("/s".into(), &req).total_timeout,
        Duration::from_secs(60)
    );
    let req = JailRequest::python("x").limit("REALTIME", 3);
    assert_eq!(
        exec_config("/s".into(), &req).total_timeout,
        Duration::from_secs(60)
    );
    let req = JailRequest::python("x").limit("REALTIME", 300);
    assert_eq!(
        exec_config("/s".into(), &req).total_timeout,
        Duration::from_secs(340)
    );
    let req = JailRequest::python("x").limit("REALTIME", 0);
    assert_eq!(exec_config("/s".into(), &req).total_timeout, Duration::MAX);
}
