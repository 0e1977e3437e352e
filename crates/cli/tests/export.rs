//! `hangar export nomad|kubernetes` through the real binary, against a real
//! instance of the demo (with a templated config), checked by third-party
//! tools rather than by our own reading of the output.
//!
//! **Kubernetes**: `kubernetes-validate --strict` (PyPI, 1.37.0), which
//! bundles the JSON schemas derived from Kubernetes' OpenAPI and validates
//! offline every document of the stream; strict mode refuses any field the
//! schema does not name. The documents are read back by PyYAML (from the same
//! venv) for the content checks. Limits: schemas check shapes and types, not
//! everything the API server validates (name formats, that a probe's port
//! names a container port, …); the test checks those that matter itself.
//! The init container's script is run here too (with `sh`, `sha256sum`,
//! `tar` and `awk`, a copy of `wget` that reads `file://`), in a scratch
//! directory standing for the pod's volumes: it must unpack the binary and
//! write the config with the secret put in, byte for byte.
//!
//! **Nomad**: there is no `nomad` binary in Debian and its module cannot be
//! fetched, so `tests/nomad/jobspec_check.go` (see its comment) is built
//! with Debian's Go and HashiCorp's HCL v2 library (the parser Nomad's
//! jobspec2 uses): it decodes the job into structs carrying Nomad's own
//! `hcl` tags (unknown keys and wrong types refused), applies the
//! registration rules the export could break (restart policy, checks,
//! ports), and executes each template as consul-template would, with
//! `nomadVar` answering given values. Limits: it is not Nomad: a rule Nomad
//! has and the check does not copy (the server's whole `Job.Validate`) is
//! not checked, and the exec driver's runtime (chroot, artifact download)
//! is not run.
//!
//! `.ci/run` installs both (`$HANGAR_TEST_KUBERNETES_VALIDATE`,
//! `$HANGAR_TEST_HCL_GOPATH`); where one is missing, its part says why and
//! is skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use serde_json::{json, Value};

const SECRET: &str = "S3cr3t-v4lue/with\"quote";

/// The built-in demo as `democonf`, from the same release archives, with a
/// templated config whose text holds everything the targets must escape
/// (`${`, `%{`, `{{`, quotes, a backslash) and, optionally, a secret option.
fn catalog(dir: &Path) -> PathBuf {
    let src = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../catalog/demo"));
    let cat = dir.join("catalog");
    let f = cat.join("democonf");
    std::fs::create_dir_all(f.join("releases")).unwrap();
    for e in std::fs::read_dir(src.join("releases")).unwrap().flatten() {
        std::fs::copy(e.path(), f.join("releases").join(e.file_name())).unwrap();
    }
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(src.join("manifest.json")).unwrap()).unwrap();
    let o = m.as_object_mut().unwrap();
    o.remove("$schema");
    o.insert("id".into(), json!("democonf"));
    o.insert("isolation_level".into(), json!("shared"));
    o.insert(
        "config".into(),
        json!({"generator": "template", "template": "demo.conf.j2", "options": {
            "greeting": {"type": "string", "default": "hello"},
            "password": {"type": "string", "secret": true, "max_length": 64}
        }}),
    );
    std::fs::write(
        f.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    std::fs::write(
        f.join("demo.conf.j2"),
        "greeting {{ options.greeting }}\n\
         literal ${HOME} %{if} {{ \"{{\" }}not a template}} \"quoted\" back\\slash\n\
         {% if options.password is defined %}password {{ options.password }}\n{% endif %}",
    )
    .unwrap();
    crashy(&cat);
    cat
}

/// A feature whose release is a script that exits at once, packed as a
/// release is: its instance ends in error.
fn crashy(cat: &Path) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no test archive for {other}"),
    };
    let dir = cat.join("crashy");
    let stage = dir.join("stage").join("crashy-1.0.0");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::create_dir_all(dir.join("releases")).unwrap();
    let bin = stage.join("run");
    std::fs::write(&bin, "#!/bin/sh\nexit 3\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let asset = format!("crashy-1.0.0-linux-{arch}.tar.gz");
    let st = Command::new("tar")
        .arg("czf")
        .arg(dir.join("releases").join(&asset))
        .arg("-C")
        .arg(dir.join("stage"))
        .arg("crashy-1.0.0")
        .status()
        .unwrap();
    assert!(st.success());
    let sum = Command::new("sha256sum")
        .arg(&asset)
        .current_dir(dir.join("releases"))
        .output()
        .unwrap();
    std::fs::write(dir.join("releases/checksums.txt"), &sum.stdout).unwrap();
    let m = json!({
        "id": "crashy", "name": "crashy", "version": "1.0.0", "license": "MIT",
        "source": {"type": "file", "asset_pattern": "releases/crashy-{{version}}-{{os}}-{{arch}}.tar.gz",
                   "verification": {"type": "sha256", "checksums_asset": "checksums.txt"}},
        "binary": {"path": "crashy-{{version}}/run", "architectures": ["amd64", "arm64"]},
        "health": {"type": "tcp", "port_index": 0, "timeout_seconds": 1, "interval_seconds": 1},
        "network": {"default_ports": [8080], "port_names": ["http"]},
        "isolation_level": "shared"
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
}

fn serve(s: &Scratch, range: &str) -> (PathBuf, Served) {
    let cat = catalog(s.path());
    let cfg = s.path().join("hangar.toml");
    std::fs::write(
        &cfg,
        format!("[daemon]\nport_range = \"{range}\"\n[daemon.instances]\nstart_retries = 1\nready_timeout = \"20s\"\n"),
    )
    .unwrap();
    let data = s.path().join("data");
    let d = Served::start(
        &data,
        &[
            "-c",
            cfg.to_str().unwrap(),
            "--catalog",
            cat.to_str().unwrap(),
        ],
    );
    (data, d)
}

fn create(data: &Path, name: &str, extra: &[&str]) -> Value {
    let mut args = vec!["instance", "create", "democonf", name, "--json"];
    args.extend_from_slice(extra);
    let o = run(data, &args);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let v = json(&o);
    assert_eq!(v["state"], "running", "{v}");
    v
}

fn export(data: &Path, format: &str, name: &str) -> String {
    let o = run(data, &["export", format, name]);
    assert!(o.status.success(), "export {format}: {}", stderr(&o));
    stdout(&o)
}

/// The digest the install recorded.
fn installed_sha256(data: &Path) -> String {
    let rec: Value = serde_json::from_slice(
        &std::fs::read(data.join("features/democonf/1.1.0/.hangar-install.json")).unwrap(),
    )
    .unwrap();
    rec["sha256"].as_str().unwrap().to_string()
}

fn config_on_disk(v: &Value) -> String {
    std::fs::read_to_string(v["config_file"].as_str().expect("a config file")).unwrap()
}

// ------------------------------------------------------------- Kubernetes

fn kubernetes_validate() -> Option<PathBuf> {
    let p = PathBuf::from(
        std::env::var_os("HANGAR_TEST_KUBERNETES_VALIDATE").unwrap_or_else(|| {
            "/var/cache/hangar-ci/k8s-validate-1.37/bin/kubernetes-validate".into()
        }),
    );
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIP the Kubernetes validation: no kubernetes-validate at {} (.ci/run installs it from PyPI and names it in $HANGAR_TEST_KUBERNETES_VALIDATE)",
            p.display()
        );
        None
    }
}

/// Every document through `kubernetes-validate --strict`, then read back
/// by PyYAML as a list.
fn validate_kubernetes(tool: &Path, dir: &Path, text: &str) -> Vec<Value> {
    let file = dir.join("export.k8s.yaml");
    std::fs::write(&file, text).unwrap();
    let o = Command::new(tool)
        .arg("--strict")
        .arg(&file)
        .output()
        .expect("kubernetes-validate runs");
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        o.status.success(),
        "kubernetes-validate refused it:\n{out}\n{text}"
    );
    assert!(!out.contains("ERROR"), "{out}");
    let python = tool.with_file_name("python3");
    let o = Command::new(&python)
        .args([
            "-c",
            "import json, sys, yaml\nprint(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(&file)
        .output()
        .expect("python runs");
    assert!(o.status.success(), "{}", stderr(&o));
    let docs: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    let passed = out.matches(" passed for resource ").count();
    assert_eq!(passed, docs.len(), "every document validated:\n{out}");
    docs
}

fn doc<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {docs:?}"))
}

/// Run the init container's script with the pod's volumes under `root`
/// (its `/hangar/...` paths rewritten) and a `wget` that reads `file://`.
fn run_init_container(root: &Path, docs: &[Value], secret_values: &[(&str, &str)]) {
    let deployment = doc(docs, "Deployment");
    let init = &deployment["spec"]["template"]["spec"]["initContainers"][0];
    // The ConfigMap as the pod's volume shows it.
    if let Some(items) = doc(docs, "ConfigMap")["data"].as_object() {
        std::fs::create_dir_all(root.join("config-template")).unwrap();
        for (k, v) in items {
            std::fs::write(root.join("config-template").join(k), v.as_str().unwrap()).unwrap();
        }
    }
    assert_eq!(init["command"][0], "sh");
    let script = init["command"][2].as_str().unwrap();
    let prefix = format!("{}/", root.display());
    let script = script.replace("/hangar/", &prefix);
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.join("app")).unwrap();
    std::fs::create_dir_all(root.join("config")).unwrap();
    let wget = bin.join("wget");
    std::fs::write(
        &wget,
        "#!/bin/sh\n# wget -q -O OUT URL, for file:// URLs only\nout=$3; url=$4\ncp \"${url#file://}\" \"$out\"\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wget, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut c = Command::new("sh");
    c.arg("-c").arg(&script);
    c.env(
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    for e in init["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = match e["value"].as_str() {
            Some(v) => v.replace("/hangar/", &prefix),
            None => {
                let key = e["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap();
                secret_values
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_else(|| panic!("no value for the secret key {key}"))
            }
        };
        c.env(name, value);
    }
    let o = c.output().expect("sh runs");
    assert!(
        o.status.success(),
        "the init container's script failed: {}{}\n{script}",
        stdout(&o),
        stderr(&o)
    );
}

// ------------------------------------------------------------- Nomad

/// `tests/nomad/jobspec_check.go`, built once with Debian's Go against
/// Debian's hcl/v2 (GOPATH mode, nothing fetched).
fn jobspec_check() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let gopath = PathBuf::from(
                std::env::var_os("HANGAR_TEST_HCL_GOPATH").unwrap_or_else(|| "/usr/share/gocode".into()),
            );
            if !gopath.join("src/github.com/hashicorp/hcl/v2/gohcl").is_dir() {
                eprintln!(
                    "SKIP the Nomad validation: no HCL v2 Go library under {} (.ci/run installs Debian's golang-github-hashicorp-hcl-v2-dev)",
                    gopath.display()
                );
                return None;
            }
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("jobspec_check");
            let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nomad/jobspec_check.go");
            let o = match Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(src)
                .env("GO111MODULE", "off")
                .env("GOPATH", &gopath)
                .env("GOFLAGS", "")
                .env("GOCACHE", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-cache"))
                .output()
            {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("SKIP the Nomad validation: cannot run `go` ({e}); .ci/run installs golang-go");
                    return None;
                }
            };
            assert!(o.status.success(), "jobspec_check does not build: {}", stderr(&o));
            Some(out)
        })
        .clone()
}

/// The job through jobspec_check: its summary, or a failure with what it said.
fn validate_nomad(tool: &Path, dir: &Path, text: &str, vars: &[(&str, &str)]) -> Value {
    let file = dir.join("export.nomad.hcl");
    std::fs::write(&file, text).unwrap();
    let mut c = Command::new(tool);
    for (k, v) in vars {
        c.arg("-var").arg(format!("{k}={v}"));
    }
    let o = c.arg(&file).output().expect("jobspec_check runs");
    assert!(
        o.status.success(),
        "jobspec_check refused it:\n{}\n{text}",
        stderr(&o)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

// ------------------------------------------------------------- tests

#[test]
fn an_instance_exports_to_nomad_and_kubernetes_that_their_tools_accept() {
    let s = Scratch::new("export-demo");
    let (data, _d) = serve(&s, "25000-25049");
    let v = create(&data, "web", &[]);
    let port = v["ports"]["http"].as_u64().unwrap();
    let config = config_on_disk(&v);
    assert!(config.contains("${HOME} %{if} {{not"), "{config}");
    let sha = installed_sha256(&data);

    // Nomad, written atomically with -o.
    let file = s.path().join("web.nomad.hcl");
    let o = run(
        &data,
        &["export", "nomad", "web", "-o", file.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "-o prints nothing on stdout");
    let hcl = std::fs::read_to_string(&file).unwrap();
    assert!(
        std::fs::read_dir(s.path())
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().contains("hangar-tmp")),
        "no temp file left"
    );
    assert!(hcl.contains("Secrets: none to provide."), "{hcl}");
    if let Some(tool) = jobspec_check() {
        let j = validate_nomad(&tool, s.path(), &hcl, &[]);
        assert_eq!(j["id"], "web");
        let g = &j["groups"][0];
        assert_eq!(g["ports"]["http"], port, "{j}");
        assert_eq!(g["restart"]["mode"], "fail", "{j}");
        let t = &g["tasks"][0];
        assert_eq!(t["driver"], "exec");
        let a = &t["artifacts"][0];
        assert_eq!(a["options"]["checksum"], format!("sha256:{sha}"), "{j}");
        assert!(
            a["source"]
                .as_str()
                .unwrap()
                .ends_with("hangar-demo-1.1.0-linux-amd64.tar.gz")
                || a["source"]
                    .as_str()
                    .unwrap()
                    .ends_with("hangar-demo-1.1.0-linux-arm64.tar.gz"),
            "{j}"
        );
        let tp = &t["templates"][0];
        assert_eq!(tp["destination"], "local/config/demo.conf");
        assert_eq!(
            tp["rendered"].as_str().unwrap(),
            config,
            "the template writes the config byte for byte"
        );
        assert_eq!(t["command"], "/local/release/hangar-demo-1.1.0/hangar-demo");
        assert_eq!(t["env"]["HANGAR_CONFIG"], "/local/config/demo.conf", "{j}");
        assert_eq!(t["env"]["HANGAR_PORT_HTTP"], port.to_string(), "{j}");
        assert_eq!(t["resources"]["memory"], 64, "{j}");
        let c = &t["checks"][0];
        assert_eq!(
            (c["type"].as_str(), c["path"].as_str()),
            (Some("http"), Some("/")),
            "{j}"
        );
        assert_eq!(c["port_number"], port, "{j}");
        assert_eq!(c["timeout_ms"], 1000, "{j}");
        assert_eq!(c["interval_ms"], 10000, "{j}");
    }

    // Kubernetes, on standard output.
    let yaml = export(&data, "kubernetes", "web");
    assert!(
        yaml.contains("initContainer") || yaml.contains("init container"),
        "the header says how the binary arrives"
    );
    if let Some(tool) = kubernetes_validate() {
        let docs = validate_kubernetes(&tool, s.path(), &yaml);
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            ["ConfigMap", "Deployment", "Service"],
            "no Secret without secrets"
        );
        assert_eq!(
            doc(&docs, "ConfigMap")["data"]["demo.conf"]
                .as_str()
                .unwrap(),
            config,
            "byte for byte"
        );
        let dep = doc(&docs, "Deployment");
        let c = &dep["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["resources"]["limits"]["memory"], "64Mi");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http");
        assert_eq!(
            c["ports"][0],
            json!({"name": "http", "containerPort": port, "protocol": "TCP"})
        );
        assert_eq!(c["command"][0], "/hangar/app/hangar-demo-1.1.0/hangar-demo");
        let init = &dep["spec"]["template"]["spec"]["initContainers"][0];
        let env: Vec<&Value> = init["env"].as_array().unwrap().iter().collect();
        assert!(
            env.iter()
                .any(|e| e["name"] == "HANGAR_RELEASE_SHA256" && e["value"] == sha.as_str()),
            "{init}"
        );
        let svc = doc(&docs, "Service");
        assert_eq!(svc["spec"]["ports"][0]["port"], port);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
        // The init container's script unpacks the verified binary here too.
        let root = s.path().join("pod");
        run_init_container(&root, &docs, &[]);
        let bin = root.join("app/hangar-demo-1.1.0/hangar-demo");
        assert!(
            bin.is_file(),
            "the binary was unpacked at {}",
            bin.display()
        );
    }

    // The same export twice is the same text: it can live in a repository.
    assert_eq!(export(&data, "kubernetes", "web"), yaml);
}

#[test]
fn a_secret_option_is_in_neither_export_and_both_targets_put_it_back() {
    let s = Scratch::new("export-secret");
    let (data, _d) = serve(&s, "25050-25099");
    let v = create(&data, "vault", &["--set", &format!("password={SECRET}")]);
    let config = config_on_disk(&v);
    assert!(
        config.contains(&format!("password {SECRET}")),
        "the instance has it: {config}"
    );

    let hcl = export(&data, "nomad", "vault");
    let yaml = export(&data, "kubernetes", "vault");
    let o = run(
        &data,
        &[
            "export",
            "nomad",
            "vault",
            "-o",
            s.path().join("v.hcl").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let written = std::fs::read_to_string(s.path().join("v.hcl")).unwrap();
    for (what, text) in [
        ("nomad", &hcl),
        ("kubernetes", &yaml),
        ("-o file", &written),
    ] {
        for needle in [SECRET, "S3cr3t-v4lue", "S3cr3t-v4lue/with\\\"quote"] {
            assert!(
                !text.contains(needle),
                "the {what} export holds the secret ({needle}):\n{text}"
            );
        }
    }
    assert!(
        hcl.contains("nomad var put nomad/jobs/vault password=..."),
        "the header says what to provide:\n{hcl}"
    );
    assert!(
        yaml.contains("vault-secrets") && yaml.contains("password"),
        "{yaml}"
    );

    if let Some(tool) = jobspec_check() {
        // With the variable given, the template writes the instance's config.
        let j = validate_nomad(&tool, s.path(), &hcl, &[("password", SECRET)]);
        let tp = &j["groups"][0]["tasks"][0]["templates"][0];
        assert_eq!(tp["rendered"].as_str().unwrap(), config, "{j}");
    }
    if let Some(tool) = kubernetes_validate() {
        let docs = validate_kubernetes(&tool, s.path(), &yaml);
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(kinds, ["Secret", "ConfigMap", "Deployment", "Service"]);
        assert_eq!(doc(&docs, "Secret")["stringData"]["password"], "REPLACE-ME");
        // With the Secret filled in, the init container writes the
        // instance's config.
        let root = s.path().join("pod");
        run_init_container(&root, &docs, &[("password", SECRET)]);
        assert_eq!(
            std::fs::read_to_string(root.join("config/demo.conf")).unwrap(),
            config
        );
    }
}

#[test]
fn bad_exports_are_refused_with_a_code_and_a_hint() {
    let s = Scratch::new("export-bad");
    let (data, _d) = serve(&s, "25100-25149");

    let o = run(&data, &["export", "nomad", "nobody"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("INSTANCE_NOT_FOUND"), "{}", stderr(&o));

    let o = run(&data, &["export", "nomda", "nobody"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("EXPORT_UNKNOWN_FORMAT"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("did you mean \"nomad\""),
        "{}",
        stderr(&o)
    );

    // An instance that never got made whole is not exported.
    let o = run(&data, &["instance", "create", "crashy", "boom", "--json"]);
    assert_eq!(json(&o)["state"], "error", "{}", stderr(&o));
    let o = run(&data, &["export", "kubernetes", "boom"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("INSTANCE_NOT_CREATED"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("instance start"),
        "the hint says how: {}",
        stderr(&o)
    );

    // -o into a directory that does not exist: an error, nothing written.
    create(&data, "web", &[]);
    let o = run(
        &data,
        &[
            "export",
            "nomad",
            "web",
            "-o",
            s.path().join("no/such/dir/x.hcl").to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("EXPORT_WRITE_FAILED"), "{}", stderr(&o));

    // A reader that goes away early is no failure.
    let mut child = hangar()
        .arg("--data-dir")
        .arg(&data)
        .args(["export", "kubernetes", "web"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0), "a closed pipe ends the export quietly");
}
