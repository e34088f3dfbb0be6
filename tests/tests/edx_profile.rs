//! The edx-platform sandbox profile (requirements/sandbox-edx-platform.txt,
//! `scripts/setup-sandbox-venv.sh` without `--lean`) end to end: a jailed program
//! imports every module edx-platform's capa preloads for a problem (numpy, math, scipy,
//! calc, eia, chem.chemcalc, chem.chemtools, chem.miller, verifiers.draganddrop) and
//! its code prolog's (random2, six), uses each a little, and finds nltk's data
//! directories below its `$HOME` (the run's `$TMPDIR`: nltk cannot even be imported
//! without a home). Cold, and warm from a pool that preimported the whole set, as an
//! LMS pool would (docs/sandbox-profiles.md).
//!
//! The interpreter is `$CODEJAIL_TEST_EDX_PYTHON` (scripts/test.sh builds it); unset,
//! the tests skip, or fail under `CODEJAIL_REQUIRE_PRIVILEGED=1`.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use codejail_protocol::PoolStatus;
use codejail_tests::{
    broker, edx_python, is_root, py, reachable_by_others, text, BrokerOpts, JailRequest,
    JailResult, TestBroker,
};

/// What capa imports for every problem, then its code prolog's imports.
const CAPA_MODULES: &[&str] = &[
    "numpy",
    "math",
    "scipy",
    "calc",
    "eia",
    "chem.chemcalc",
    "chem.chemtools",
    "chem.miller",
    "verifiers.draganddrop",
    "random2",
    "six",
];

/// Imports each of [`CAPA_MODULES`] and uses it: the grading helpers problems call.
const CAPA_PROGRAM: &str = r#"
    import json
    import math
    import os

    import numpy
    import scipy
    import calc
    import eia
    import chem.chemcalc
    import chem.chemtools
    import chem.miller
    import verifiers.draganddrop
    import random2
    import six

    import scipy.integrate
    import scipy.special
    from chem import chemcalc, chemtools, miller
    from verifiers import draganddrop

    print("calc", calc.evaluator({}, {}, "1+1"), calc.evaluator({"x": 3}, {}, "x^2+sqrt(16)"))
    print("eia", eia.iseia(47), eia.iseia(48))
    print(
        "chemcalc",
        chemcalc.compare_chemical_expression("H2O", "H2O"),
        chemcalc.compare_chemical_expression("H2O", "H2O2"),
        chemcalc.chemical_equations_equal("H2 + O2 -> H2O2", "2 H2 + 2 O2 -> 2 H2O2"),
        chemcalc.render_to_html("H2O"),
    )
    atoms = {"c0": "N", "p0": "H", "p1": "(ep)", "p2": "H", "p3": "H"}
    user = chemtools.vsepr_parse_user_answer(json.dumps({"geometry": "AX4E0", "atoms": atoms}))
    print("chemtools", chemtools.vsepr_grade(user, chemtools.vsepr_build_correct_answer("AX4E0", atoms)))
    points = [["0.00", "0.00", "1.00"], ["1.00", "0.00", "1.00"], ["1.00", "1.00", "1.00"]]
    print(
        "miller",
        miller.miller(numpy.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])),
        miller.grade(json.dumps({"lattice": "bcc", "points": points}), {"miller": "(0,0,1)", "lattice": "bcc"}),
    )
    correct = {"1": "t1", "name_with_icon": "t2"}
    print(
        "draganddrop",
        draganddrop.grade('[{"1": "t1"}, {"name_with_icon": "t2"}]', correct),
        draganddrop.grade('[{"1": "t2"}, {"name_with_icon": "t1"}]', correct),
    )
    print("numpy", numpy.dot([1, 2], [3, 4]), numpy.linalg.det(numpy.eye(3)))
    print("scipy", scipy.special.gamma(5), round(scipy.integrate.quad(lambda x: x * x, 0, 3)[0], 9))
    print("math", math.factorial(5), math.gcd(12, 18))
    r = random2.Random(42)
    print("random2", r.randint(1, 100), r.random())
    print("six", six.PY3, six.text_type is str, list(six.moves.range(3)))

    import nltk
    import nltk.downloader

    home = os.environ.get("HOME")
    print("HOME is TMPDIR", home is not None and home == os.environ.get("TMPDIR"))
    mine = os.path.join(home or "~", "nltk_data")
    print("nltk.data.path", isinstance(nltk.data.path, list), mine in nltk.data.path)
    try:
        where = nltk.downloader.Downloader().default_download_dir()
        where = where.replace(home, "$HOME", 1) if home and where.startswith(home) else where
    except ValueError as e:
        where = f"ValueError: {e}"
    print("nltk download dir", where)
"#;

/// [`CAPA_PROGRAM`]'s output (the same outside a jail, with `HOME=$TMPDIR`).
const CAPA_OUTPUT: &str = "\
calc 2 13.0
eia True False
chemcalc True False True <span class=\"math\">H<sub>2</sub>O</span>
chemtools True
miller (1,1,1) True
draganddrop True False
numpy 11 1.0
scipy 24.0 9.0
math 120 6
random2 64 0.025010755222666936
six True True [0, 1, 2]
HOME is TMPDIR True
nltk.data.path True True
nltk download dir $HOME/nltk_data
";

/// A dev broker running the edx-platform interpreter with room for its imports (a
/// cold run of [`CAPA_PROGRAM`] takes about a second of CPU), or `None` (a skip).
fn edx_opts() -> Option<BrokerOpts> {
    let python = edx_python()?;
    assert!(
        python.is_file(),
        "{} does not exist (scripts/setup-sandbox-venv.sh builds it)",
        python.display()
    );
    if is_root() {
        // The broker under test runs as a non-root uid; the harness checks only the
        // main test interpreter.
        if let Err(why) = reachable_by_others(&python) {
            panic!(
                "the broker under test runs as a non-root uid and cannot reach {}: {why} \
                 (build it with scripts/setup-sandbox-venv.sh, which makes it world-readable)",
                python.display()
            );
        }
    }
    Some(
        BrokerOpts::new()
            .python(python)
            .default_limit("REALTIME", 30)
            .default_limit("CPU", 10),
    )
}

#[track_caller]
fn assert_capa_output(res: &JailResult, what: &str) {
    assert_eq!(
        (
            res.status,
            text(&res.stdout).as_str(),
            text(&res.stderr).as_str()
        ),
        (0, CAPA_OUTPUT, ""),
        "{what}: status, stdout, stderr"
    );
}

#[tokio::test]
async fn capa_preloads_import_and_work_in_a_cold_run() {
    let Some(opts) = edx_opts() else { return };
    let b = broker!(opts);
    let res = b.run(&py(CAPA_PROGRAM)).await;
    assert_capa_output(&res, "cold run");
}

async fn pool_status(b: &TestBroker) -> PoolStatus {
    let report = codejail_client::status(&b.cfg()).await.expect("status");
    report.pool.get("python").cloned().unwrap_or_default()
}

/// Run `req` on a warm jail (checked by the pool's hit count), once one is ready.
async fn run_warm(b: &TestBroker, req: &JailRequest) -> JailResult {
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let p = pool_status(b).await;
        if p.ready > 0 {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no warm jail ready in 60 s (do the preimports fail?); broker log:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let res = b.run(req).await;
    assert_eq!(
        pool_status(b).await.hits,
        before.hits + 1,
        "the run was not served warm; broker log:\n{}",
        b.log()
    );
    res
}

#[tokio::test]
async fn capa_preloads_work_in_a_warm_run_that_preimported_them() {
    let Some(opts) = edx_opts() else { return };
    let mut args = vec!["--pool-size".to_string(), "1".to_string()];
    // json: safe_exec's wrapper imports it before the code runs.
    for m in std::iter::once(&"json").chain(CAPA_MODULES) {
        args.push("--preimport".into());
        args.push((*m).into());
    }
    let b = broker!(opts.args(args));

    // The run finds every module already imported (so it pays for none of them).
    let probe = py(&format!(
        "import sys\nprint(sorted(m for m in {CAPA_MODULES:?} if m not in sys.modules))\n"
    ));
    let res = run_warm(&b, &probe).await;
    assert_eq!(
        (
            res.status,
            text(&res.stdout).as_str(),
            text(&res.stderr).as_str()
        ),
        (0, "[]\n", ""),
        "every capa module preimported; broker log:\n{}",
        b.log()
    );
    let p = pool_status(&b).await;
    let mut expected: Vec<String> = vec!["json".into()];
    expected.extend(CAPA_MODULES.iter().map(|m| m.to_string()));
    assert_eq!(p.preimport, expected, "status shows the preimports");

    // The same program gives the cold run's output: nltk, imported while the jail
    // waited, finds its data below this run's home too.
    let res = run_warm(&b, &py(CAPA_PROGRAM)).await;
    assert_capa_output(&res, "warm run");
}
