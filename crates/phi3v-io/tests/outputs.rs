//! The three rules of phi3v-io, each on real folders.

use std::fs;
use std::path::Path;

use phi3v_io::{check_disjoint, replace_file, write_atomic, OutputError, Role, StagedDir};

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = if e.path().is_file() {
                fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_failed_atomic_write_leaves_the_old_file_and_no_temporary() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("adapter.json");
    fs::write(&path, "old").unwrap();
    let result: Result<(), OutputError> = write_atomic(&path, |t| {
        fs::write(t, "half").unwrap();
        Err(OutputError::io(t, std::io::Error::other("disk full")))
    });
    assert!(result.is_err());
    assert_eq!(fs::read_to_string(&path).unwrap(), "old");
    assert_eq!(snapshot(tmp.path()).len(), 1, "temporary file left behind");
    replace_file(&path, |w| std::io::Write::write_all(w, b"new")).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "new");
    assert_eq!(snapshot(tmp.path()).len(), 1);
}

#[cfg(unix)]
#[test]
fn atomic_writes_get_the_permissions_of_a_plain_write() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    fs::write(&plain, "x").unwrap();
    let atomic = tmp.path().join("atomic");
    replace_file(&atomic, |w| std::io::Write::write_all(w, b"x")).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode();
    assert_eq!(mode(&atomic), mode(&plain));
    // A replaced file keeps its own permissions.
    fs::set_permissions(&atomic, fs::Permissions::from_mode(0o600)).unwrap();
    replace_file(&atomic, |w| std::io::Write::write_all(w, b"y")).unwrap();
    assert_eq!(mode(&atomic) & 0o777, 0o600);
}

#[test]
fn a_non_empty_folder_is_replaced_only_on_request_and_then_wholly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("model.safetensors.index.json"), "stale index").unwrap();
    fs::write(out.join("model-00001-of-00002.safetensors"), "stale shard").unwrap();

    let err = StagedDir::new(&out, "--out", false).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, OutputError::NotEmpty { .. }), "{message}");
    assert!(
        message.contains("--overwrite") && message.contains("model-00001"),
        "{message}"
    );

    let staged = StagedDir::new(&out, "--out", true).unwrap();
    fs::write(staged.path().join("model.safetensors"), "new").unwrap();
    // Until the commit, the destination is untouched.
    assert_eq!(snapshot(&out).len(), 2);
    staged.commit().unwrap();
    assert_eq!(
        snapshot(&out),
        vec![("model.safetensors".to_string(), b"new".to_vec())]
    );
    // Nothing hidden is left beside it.
    assert_eq!(snapshot(tmp.path()).len(), 1, "{:?}", snapshot(tmp.path()));
}

#[test]
fn an_abandoned_staged_folder_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sample-data");
    {
        let staged = StagedDir::new(&out, "--out", false).unwrap();
        fs::write(staged.path().join("catalogue.parquet"), "x").unwrap();
    }
    assert!(!out.exists());
    assert!(snapshot(tmp.path()).is_empty());
}

#[test]
fn a_file_in_the_way_of_an_output_folder_is_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fs::write(&out, "keep me").unwrap();
    let err = StagedDir::new(&out, "--out", true).unwrap_err();
    assert!(matches!(err, OutputError::NotAFolder { .. }), "{err}");
    assert_eq!(fs::read_to_string(&out).unwrap(), "keep me");
}

#[test]
fn outputs_that_are_contain_or_sit_inside_inputs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    fs::create_dir(&model).unwrap();
    let weights = model.join("model.safetensors");
    fs::write(&weights, "w").unwrap();
    let data = tmp.path().join("data.csv");
    fs::write(&data, "a").unwrap();
    let inputs = [Role::new("--model", &model), Role::new("--data", &data)];
    let cases = [
        (model.clone(), "is"),
        (model.join("../model/."), "is"),
        (tmp.path().to_path_buf(), "contains"),
        (weights.clone(), "is inside"),
        (model.join("new/sub"), "is inside"),
        (data.clone(), "is"),
    ];
    for (out, relation) in cases {
        let err = check_disjoint(Role::new("--out", &out), &inputs).unwrap_err();
        match &err {
            OutputError::Overlaps { relation: r, .. } => assert_eq!(*r, relation, "{out:?}"),
            other => panic!("{out:?}: {other}"),
        }
        assert!(err.to_string().contains("--out"), "{err}");
    }
    // Siblings, and files next to an input file, are fine.
    check_disjoint(Role::new("--out", &tmp.path().join("merged")), &inputs).unwrap();
    check_disjoint(Role::new("--out", &tmp.path().join("data.json")), &inputs).unwrap();
}

#[cfg(unix)]
#[test]
fn a_link_to_an_input_is_the_input() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    fs::create_dir(&model).unwrap();
    let link = tmp.path().join("alias");
    std::os::unix::fs::symlink(&model, &link).unwrap();
    let err = check_disjoint(Role::new("--out", &link), &[Role::new("--model", &model)]);
    assert!(matches!(
        err,
        Err(OutputError::Overlaps { relation: "is", .. })
    ));
}
