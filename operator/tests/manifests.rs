//! `config/crd/` holds exactly what `operator crd` prints.

#[test]
fn config_crd_matches_the_generated_crd() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/crd/flaskmongo.dev_flaskmongoapps.yaml"
    );
    let committed =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let generated = flaskmongo_operator::crd_yaml().expect("the CRD renders");
    assert!(
        committed == generated,
        "{path} differs from `operator crd`; run `make manifests` to regenerate it"
    );
}

#[test]
fn the_binary_prints_the_same_crd() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_operator"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        flaskmongo_operator::crd_yaml().unwrap()
    );
}
