//! The Kubernetes manifests (deploy/kubernetes/): `validate.sh` renders every kustomization and
//! validates it against the schemas of a pinned Kubernetes; then, on what it rendered, what a
//! user relies on: probes on the admin port's paths, a termination grace period longer than the
//! gateway's drain, a non-root read-only container, every ConfigMap key mounted, and the
//! ConfigMap a configuration `guichet check` accepts, laid out as the kubelet lays it out.

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use crate::common::gateway::BINARY;

const KUSTOMIZATIONS: &[&str] = &["base", "overlays-redis"];

/// Seconds of a duration written in seconds or minutes (`30s`, `1m`), as the manifests' are.
fn seconds(written: &str) -> u64 {
    let (number, unit) = written.split_at(written.len() - 1);
    let number: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("a duration: {written}"));
    match unit {
        "s" => number,
        "m" => number * 60,
        _ => panic!("a duration in s or m: {written}"),
    }
}

/// The longest a drain takes: `shutdown_delay` (5s by default) then `shutdown_grace_period`
/// (30s by default).
fn drain_seconds(gateway: &str) -> u64 {
    let config: Value = serde_yaml::from_str(gateway).expect("gateway.yaml is YAML");
    let setting = |key: &str, default: &str| seconds(config[key].as_str().unwrap_or(default));
    setting("shutdown_delay", "5s") + setting("shutdown_grace_period", "30s")
}

type Rendered = Vec<(&'static str, Vec<Value>)>;

/// The manifests `validate.sh` rendered and found valid, once for both tests (validating takes
/// about ten seconds).
fn rendered() -> &'static Rendered {
    static RENDERED: OnceLock<Rendered> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kubernetes-rendered");
        let validate = Command::new("bash")
            .arg("deploy/kubernetes/validate.sh")
            .arg(&out)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run validate.sh");
        assert!(
            validate.status.success(),
            "deploy/kubernetes/validate.sh failed:\n{}{}",
            String::from_utf8_lossy(&validate.stdout),
            String::from_utf8_lossy(&validate.stderr)
        );
        KUSTOMIZATIONS
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(out.join(format!("{name}.yaml")))
                    .expect("a rendered kustomization");
                let documents = serde_yaml::Deserializer::from_str(&text)
                    .map(|document| Value::deserialize(document).expect("a YAML document"))
                    .collect();
                (*name, documents)
            })
            .collect()
    })
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let mut found = documents.iter().filter(|d| d["kind"] == kind);
    let first = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "more than one {kind}");
    first
}

/// The element of a list of named things (ports, volumes, mounts) called `name`.
fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .into_iter()
        .flatten()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("nothing named {name} in {list}"))
}

fn container_port(container: &Value, name: &str) -> u64 {
    named(&container["ports"], name)["containerPort"]
        .as_u64()
        .expect("a port number")
}

/// The port of `listen:` or `admin_listen:` in a gateway.yaml.
fn listen_port(gateway: &str, key: &str) -> u64 {
    let config: Value = serde_yaml::from_str(gateway).expect("gateway.yaml is YAML");
    let address = config[key].as_str().unwrap_or_else(|| panic!("no {key}"));
    assert!(address.starts_with("0.0.0.0:"), "{key}: {address}");
    address.rsplit(':').next().unwrap().parse().expect("a port")
}

#[test]
fn the_manifests_validate_and_keep_what_users_rely_on() {
    let manifests = rendered();
    for (name, documents) in manifests {
        let deployment = of_kind(documents, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let config = of_kind(documents, "ConfigMap");
        let gateway = config["data"]["gateway.yaml"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: the ConfigMap has no gateway.yaml"));

        // Probes: the admin listener's paths, on the port gateway.yaml's admin_listen opens.
        let admin = container_port(container, "admin");
        assert_eq!(admin, listen_port(gateway, "admin_listen"), "{name}");
        assert_eq!(
            container_port(container, "http"),
            listen_port(gateway, "listen"),
            "{name}"
        );
        for (probe, path) in [
            ("readinessProbe", "/readyz?exclude=upstreams&exclude=store"),
            ("livenessProbe", "/healthz"),
            ("startupProbe", "/healthz"),
        ] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{name}: {probe}");
            assert_eq!(get["port"], "admin", "{name}: {probe}");
        }

        // SIGTERM: the kubelet's SIGKILL must not cut the drain short.
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("grace");
        let drain = drain_seconds(gateway);
        assert!(
            grace > drain,
            "{name}: terminationGracePeriodSeconds {grace} is not longer than the drain ({drain}s)"
        );

        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(security["capabilities"]["drop"][0], "ALL", "{name}");

        // Every key of the ConfigMap is put at a path by the volume (items leave out the rest).
        let volume = named(&pod["volumes"], "config");
        let sources = volume["projected"]["sources"].as_array().expect("sources");
        let projected = sources
            .iter()
            .find(|s| s["configMap"]["name"] == config["metadata"]["name"])
            .unwrap_or_else(|| panic!("{name}: the volume does not project the ConfigMap"));
        let items: BTreeSet<&str> = projected["configMap"]["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["key"].as_str().expect("key"))
            .collect();
        let keys: BTreeSet<&str> = config["data"]
            .as_object()
            .expect("data")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(items, keys, "{name}: ConfigMap keys and the volume's items");

        // Prometheus finds the admin Service and scrapes its /metrics.
        let monitor = &of_kind(documents, "ServiceMonitor")["spec"];
        let admin_service = documents
            .iter()
            .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "guichet-admin")
            .expect("the admin Service");
        let selected = monitor["selector"]["matchLabels"]
            .as_object()
            .expect("labels");
        for (label, value) in selected {
            assert_eq!(
                &admin_service["metadata"]["labels"][label], value,
                "{name}: {label}"
            );
        }
        let endpoint = &monitor["endpoints"][0];
        assert_eq!(endpoint["path"], "/metrics", "{name}");
        let port = named(
            &admin_service["spec"]["ports"],
            endpoint["port"].as_str().expect("port"),
        );
        assert_eq!(port["targetPort"], "admin", "{name}");
    }

    let redis = &manifests[1].1;
    let deployment = of_kind(redis, "Deployment");
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "the autoscaler owns the replica count; an apply must not reset it"
    );
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("GUICHET_REDIS_URL") && env.contains("secretKeyRef"),
        "{env}"
    );
    assert_eq!(
        of_kind(redis, "HorizontalPodAutoscaler")["spec"]["minReplicas"],
        3
    );
}

/// The configuration volume as the kubelet writes it: the files in a timestamped folder, `..data`
/// linking to it, and a link per top-level entry (`routes -> ..data/routes`).
fn lay_out_volume(root: &Path, sources: &[Value], config: &Value, key_pem: &Path) {
    let data = root.join("..2026_12_06_00_00_00.000000001");
    let mut top = BTreeSet::new();
    for source in sources {
        for item in source["configMap"]["items"]
            .as_array()
            .into_iter()
            .chain(source["secret"]["items"].as_array())
            .flatten()
        {
            let path = item["path"].as_str().expect("path");
            let target = data.join(path);
            std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
            if source.get("secret").is_some() {
                std::fs::copy(key_pem, &target).expect("copy the key");
            } else {
                let text = config["data"][item["key"].as_str().expect("key")]
                    .as_str()
                    .expect("a ConfigMap value");
                std::fs::write(&target, text).expect("write");
            }
            top.insert(path.split('/').next().expect("a first segment").to_string());
        }
    }
    symlink(data.file_name().expect("name"), root.join("..data")).expect("..data");
    for entry in top {
        symlink(format!("..data/{entry}"), root.join(&entry)).expect("link");
    }
}

#[test]
fn the_configmap_is_a_configuration_guichet_check_accepts() {
    let manifests = rendered();
    let out = tempfile::tempdir().expect("temp dir");
    let key = out.path().join("signing-key.pem");
    let openssl = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(openssl.status.success(), "openssl genpkey failed");
    // The routes name in-cluster Services (`http://courses:8000`), which `check` resolves as
    // `serve` does; here they resolve to loopback through a private /etc/hosts.
    let hosts = out.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost courses accounts\n").expect("hosts");

    for (name, documents) in manifests {
        let pod = &of_kind(documents, "Deployment")["spec"]["template"]["spec"];
        let volume = named(&pod["volumes"], "config");
        let mount = named(&pod["containers"][0]["volumeMounts"], "config");
        assert_eq!(mount["mountPath"], "/etc/guichet", "{name}");
        let root = out.path().join(format!("{name}-etc-guichet"));
        std::fs::create_dir(&root).expect("mkdir");
        let sources = volume["projected"]["sources"].as_array().expect("sources");
        lay_out_volume(&root, sources, of_kind(documents, "ConfigMap"), &key);

        let check = Command::new("unshare")
            .args(["--mount", "sh", "-c"])
            .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
            .arg(&hosts)
            .args([BINARY, "check", "--strict", "--config"])
            .arg(root.join("gateway.yaml"))
            .env("GUICHET_REDIS_URL", "redis://127.0.0.1:6379/0")
            .output()
            .expect("run unshare");
        let stdout = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success(),
            "{name}: guichet check refused the ConfigMap:\n{stdout}{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(
            stdout.contains("ok, 2 services, 5 routes"),
            "{name}: {stdout}"
        );
    }
}

/// kustomize reads only files below the kustomization, so the base carries copies of the
/// services' fragments: they must stay the repo's.
#[test]
fn the_base_carries_the_repos_fragments_unchanged() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let copies = repo.join("deploy/kubernetes/base/config/specs");
    let names = |dir: &Path| -> BTreeSet<_> {
        std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect()
    };
    assert_eq!(names(&copies), names(&repo.join("specs")));
    for name in names(&copies) {
        assert_eq!(
            std::fs::read(copies.join(&name)).expect("the copy"),
            std::fs::read(repo.join("specs").join(&name)).expect("the fragment"),
            "deploy/kubernetes/base/config/specs/{name:?} differs from specs/ (copy it again)"
        );
    }
}
