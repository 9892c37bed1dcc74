//! The Kubernetes manifests (deploy/kubernetes) against the real binary.
//!
//! Everything is read from the YAML, never copied into this file: the
//! sidecar's args and env (ConfigMap and Secret references resolved, the
//! Downward API given fake values), the ConfigMap's TOML written where the
//! volume mount puts it, the ports and the probes. The binary then runs with
//! exactly that configuration, except that listen addresses move to free
//! loopback ports and mounted paths to a temporary folder, and must answer
//! every probe as the kubelet expects and guard `/api/*` with the Secret's
//! token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_llm-audit-proxy");
const BASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");

/// Values the kubelet would fill in from the Downward API.
const DOWNWARD_API: &[(&str, &str)] = &[
    ("metadata.name", "example-app-5d8c7b9f4-x2x7q"),
    ("metadata.namespace", "llm-apps"),
    ("spec.nodeName", "node-a"),
    ("status.podIP", "10.0.0.12"),
    ("spec.serviceAccountName", "default"),
];

/// The resources a kustomization lists, read recursively (transformers such
/// as namespace and labels do not change what the sidecar runs with).
fn load_kustomization(dir: &Path) -> Vec<Value> {
    let k = &load_yaml(&dir.join("kustomization.yaml"))[0];
    let mut out = Vec::new();
    for entry in k["resources"].as_array().expect("resources") {
        let path = dir.join(entry.as_str().unwrap());
        if path.is_dir() {
            out.extend(load_kustomization(&path));
        } else {
            out.extend(load_yaml(&path));
        }
    }
    out
}

fn load_yaml(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The one resource of `kind` named `name`.
fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name} in the manifests"))
}

fn only<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let all: Vec<_> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(all.len(), 1, "expected one {kind}");
    all[0]
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

/// A container port by name or number.
fn resolve_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = str_of(port, "port");
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `--flag value` or `--flag=value` in args.
fn arg_value(args: &[String], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&eq).map(str::to_owned)
        }
    })
}

fn set_arg_value(args: &mut [String], flag: &str, value: &str) {
    let eq = format!("{flag}=");
    let mut i = 0;
    while i < args.len() {
        if args[i] == flag && i + 1 < args.len() {
            args[i + 1] = value.to_owned();
            i += 1;
        } else if args[i].starts_with(&eq) {
            args[i] = format!("{eq}{value}");
        }
        i += 1;
    }
}

/// Kills the child if the test fails before stopping it.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One setting as the binary resolves it: flag > env > file > default.
struct Setting {
    flag: &'static str,
    env: &'static str,
    table: &'static str,
    key: &'static str,
    default: &'static str,
}

const PROXY_LISTEN: Setting = Setting {
    flag: "--listen",
    env: "LLM_AUDIT_PROXY_LISTEN",
    table: "proxy",
    key: "listen",
    default: "127.0.0.1:8080",
};
const ADMIN_LISTEN: Setting = Setting {
    flag: "--admin-listen",
    env: "LLM_AUDIT_PROXY_ADMIN_LISTEN",
    table: "admin",
    key: "listen",
    default: "127.0.0.1:9090",
};
const FILE_PATH: Setting = Setting {
    flag: "--file-path",
    env: "LLM_AUDIT_PROXY_FILE_PATH",
    table: "audit",
    key: "file_path",
    default: "./audit_logs/",
};
const SHUTDOWN_GRACE: Setting = Setting {
    flag: "--shutdown-grace",
    env: "LLM_AUDIT_PROXY_SHUTDOWN_GRACE",
    table: "proxy",
    key: "shutdown_grace_secs",
    default: "30",
};

/// What the sidecar runs with, as the manifests give it.
struct Sidecar {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    /// The config file's text, if a `--config`/`LLM_AUDIT_PROXY_CONFIG`
    /// path points into a ConfigMap volume: (container path, TOML).
    config: Option<(String, toml::Table)>,
    /// Other files the ConfigMap volumes put in the container.
    files: Vec<(String, String)>,
    /// Mount path -> whether it is a writable volume.
    mounts: Vec<(String, bool)>,
}

// === impl Sidecar ===

impl Sidecar {
    fn get(&self, s: &Setting) -> String {
        if let Some(v) = arg_value(&self.args, s.flag) {
            return v;
        }
        if let Some(v) = self.env.get(s.env) {
            return v.clone();
        }
        if let Some(v) = self
            .config
            .as_ref()
            .and_then(|(_, t)| t.get(s.table))
            .and_then(|t| t.get(s.key))
        {
            return match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
        }
        s.default.to_owned()
    }

    /// Sets the value wherever the manifests set it (flag, env, file), so the
    /// binary sees it whichever source wins.
    fn set(&mut self, s: &Setting, value: &str) {
        set_arg_value(&mut self.args, s.flag, value);
        if let Some(v) = self.env.get_mut(s.env) {
            *v = value.to_owned();
        }
        if let Some(t) = self
            .config
            .as_mut()
            .and_then(|(_, t)| t.get_mut(s.table))
            .and_then(toml::Value::as_table_mut)
        {
            if t.contains_key(s.key) {
                t.insert(s.key.to_owned(), toml::Value::String(value.to_owned()));
            }
        }
    }

    /// The path in `root` that stands for container path `path`, if `path`
    /// lies under a mounted volume.
    fn local_path(&self, root: &Path, path: &str) -> Option<PathBuf> {
        self.mounts.iter().find_map(|(mount, _)| {
            let rest = path.strip_prefix(mount.as_str())?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            Some(
                root.join(mount.trim_start_matches('/'))
                    .join(rest.trim_start_matches('/')),
            )
        })
    }

    fn on_writable_volume(&self, path: &str) -> bool {
        self.mounts.iter().any(|(mount, writable)| {
            *writable
                && path
                    .strip_prefix(mount.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

/// Reads the sidecar's configuration out of the manifests.
fn sidecar_from(objects: &[Value], pod: &Value, container: &Value) -> Sidecar {
    assert!(
        container["command"].is_null(),
        "the sidecar runs the image's entrypoint (the binary)"
    );
    let args: Vec<String> = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| str_of(a, "args").to_owned())
        .collect();

    let mut env = BTreeMap::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = str_of(&e["name"], "env name").to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_owned()
        } else if let Some(r) = e["valueFrom"]["configMapKeyRef"].as_object() {
            let cm = find(objects, "ConfigMap", str_of(&r["name"], "configMapKeyRef"));
            str_of(&cm["data"][str_of(&r["key"], "key")], &name).to_owned()
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            let secret = find(objects, "Secret", str_of(&r["name"], "secretKeyRef"));
            let key = str_of(&r["key"], "key");
            assert!(
                secret["stringData"][key].is_string(),
                "the test reads Secret values from stringData"
            );
            str_of(&secret["stringData"][key], &name).to_owned()
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            DOWNWARD_API
                .iter()
                .find(|(p, _)| *p == path)
                .unwrap_or_else(|| panic!("no fake value for fieldPath {path}"))
                .1
                .to_owned()
        } else {
            panic!("env {name}: unsupported value source {e}");
        };
        env.insert(name, value);
    }

    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    let mut mounts = Vec::new();
    let mut files = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = str_of(&m["name"], "volumeMount name");
        let mount_path = str_of(&m["mountPath"], "mountPath").trim_end_matches('/');
        let volume = volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("volumeMount {name} has no volume"));
        let writable = m["readOnly"] != true
            && (volume["emptyDir"].is_object() || volume["persistentVolumeClaim"].is_object());
        mounts.push((mount_path.to_owned(), writable));
        if let Some(cm_name) = volume["configMap"]["name"].as_str() {
            let cm = find(objects, "ConfigMap", cm_name);
            let data = cm["data"].as_object().expect("ConfigMap data");
            let items: Vec<(String, String)> = match volume["configMap"]["items"].as_array() {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        let key = str_of(&i["key"], "item key");
                        (key.to_owned(), str_of(&i["path"], "item path").to_owned())
                    })
                    .collect(),
                None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
            };
            for (key, path) in items {
                let text = str_of(&data[&key], &key).to_owned();
                files.push((format!("{mount_path}/{path}"), text));
            }
        }
    }

    let config_path =
        arg_value(&args, "--config").or_else(|| env.get("LLM_AUDIT_PROXY_CONFIG").cloned());
    let config = config_path.map(|path| {
        let i = files
            .iter()
            .position(|(p, _)| *p == path)
            .unwrap_or_else(|| panic!("config file {path} is not in a mounted ConfigMap"));
        let (path, text) = files.remove(i);
        let table: toml::Table = text.parse().unwrap_or_else(|e| panic!("{path}: {e}"));
        (path, table)
    });

    Sidecar {
        args,
        env,
        config,
        files,
        mounts,
    }
}

fn env_of<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

/// Polls `url` until it answers `want`, while the child runs.
async fn wait_for_status(http: &reqwest::Client, child: &mut Child, url: &str, want: u16) {
    let mut last = String::from("no answer");
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the binary exited ({status}) before {url} answered {want}");
        }
        match http.get(url).send().await {
            Ok(r) if r.status().as_u16() == want => return,
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered {want}: {last}");
}

#[tokio::test]
async fn the_binary_serves_the_kubernetes_manifests_configuration() {
    let objects = load_kustomization(Path::new(BASE));
    let deployment = only(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];

    // The proxy is a native sidecar: an init container that keeps running.
    let sidecars: Vec<&Value> = pod["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["restartPolicy"] == "Always")
        .collect();
    assert_eq!(sidecars.len(), 1, "one native sidecar");
    let container = sidecars[0];

    // Locked down as the image expects: non-root, read-only, no privileges.
    let sc = &container["securityContext"];
    let psc = &pod["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(sc["runAsNonRoot"] == true || psc["runAsNonRoot"] == true);
    let uid = sc["runAsUser"].as_u64().or(psc["runAsUser"].as_u64());
    assert_eq!(uid, Some(65532), "the image's nonroot user");
    let seccomp = if sc["seccompProfile"].is_null() {
        &psc["seccompProfile"]
    } else {
        &sc["seccompProfile"]
    };
    assert_eq!(seccomp["type"], "RuntimeDefault");
    assert!(container["resources"]["requests"].is_object());
    assert!(container["resources"]["limits"].is_object());

    let mut sidecar = sidecar_from(&objects, pod, container);
    assert!(
        sidecar.config.is_some(),
        "the config file comes from a ConfigMap"
    );
    for var in [
        "LLM_AUDIT_PROXY_POD_NAME",
        "LLM_AUDIT_PROXY_POD_NAMESPACE",
        "LLM_AUDIT_PROXY_NODE_NAME",
    ] {
        assert!(sidecar.env.contains_key(var), "{var} from the Downward API");
    }

    // Ports: the app reaches the proxy on the pod's loopback, and every
    // probe, the Service and the NetworkPolicy use the admin port.
    let proxy_listen = sidecar.get(&PROXY_LISTEN);
    let admin_listen = sidecar.get(&ADMIN_LISTEN);
    let app = pod["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| env_of(c, "OPENAI_BASE_URL").is_some())
        .expect("an app container with OPENAI_BASE_URL");
    assert_eq!(
        env_of(app, "OPENAI_BASE_URL"),
        Some(format!("http://{proxy_listen}/v1").as_str())
    );
    assert!(proxy_listen.starts_with("127.0.0.1:"), "{proxy_listen}");
    let admin_port = port_of(&admin_listen);
    assert_eq!(
        resolve_port(container, &serde_json::json!("proxy")),
        port_of(&proxy_listen)
    );
    let mut probe_paths = Vec::new();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        assert!(get.is_object(), "{probe} is an httpGet probe");
        assert!(get["scheme"].is_null() || get["scheme"] == "HTTP");
        assert_eq!(
            resolve_port(container, &get["port"]),
            admin_port,
            "{probe} port"
        );
        probe_paths.push((probe, str_of(&get["path"], probe).to_owned()));
    }
    let paths: Vec<&str> = probe_paths.iter().map(|(_, p)| p.as_str()).collect();
    assert!(
        paths.contains(&"/healthz") && paths.contains(&"/readyz"),
        "{paths:?}"
    );
    let service = only(&objects, "Service");
    let service_ports = service["spec"]["ports"].as_array().expect("Service ports");
    assert!(service_ports
        .iter()
        .any(|p| resolve_port(container, &p["targetPort"]) == admin_port));
    let policy = only(&objects, "NetworkPolicy");
    let rules = policy["spec"]["ingress"].as_array().expect("ingress rules");
    for rule in rules {
        for p in rule["ports"].as_array().expect("ingress ports") {
            assert_eq!(resolve_port(container, &p["port"]), admin_port);
        }
        for from in rule["from"].as_array().expect("ingress from") {
            assert!(
                from["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].is_string()
            );
        }
    }

    // The pod waits for the proxy's drain before killing it.
    let grace: u64 = sidecar.get(&SHUTDOWN_GRACE).parse().unwrap();
    let pod_grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    assert!(
        pod_grace > grace,
        "terminationGracePeriodSeconds {pod_grace} <= {grace}"
    );

    // The store lives on a writable volume, not the read-only root.
    let store = sidecar.get(&FILE_PATH);
    assert!(
        sidecar.on_writable_volume(store.trim_end_matches('/')),
        "{store}"
    );

    // Run it: mounted paths move under a temporary root, listeners to free
    // loopback ports.
    let root = tempfile::tempdir().unwrap();
    let proxy_addr = format!("127.0.0.1:{}", free_loopback_port());
    let admin_addr = format!("127.0.0.1:{}", free_loopback_port());
    sidecar.set(&PROXY_LISTEN, &proxy_addr);
    sidecar.set(&ADMIN_LISTEN, &admin_addr);
    let local_store = sidecar.local_path(root.path(), &store).unwrap();
    std::fs::create_dir_all(&local_store).unwrap();
    sidecar.set(&FILE_PATH, local_store.to_str().unwrap());
    for (mount, _) in &sidecar.mounts {
        std::fs::create_dir_all(sidecar.local_path(root.path(), mount).unwrap()).unwrap();
    }
    let (config_path, table) = sidecar.config.clone().unwrap();
    let local_config = sidecar.local_path(root.path(), &config_path).unwrap();
    std::fs::write(&local_config, toml::to_string(&table).unwrap()).unwrap();
    for (path, text) in &sidecar.files {
        std::fs::write(sidecar.local_path(root.path(), path).unwrap(), text).unwrap();
    }
    let local = |v: &str| {
        sidecar
            .local_path(root.path(), v)
            .map_or_else(|| v.to_owned(), |p| p.to_str().unwrap().to_owned())
    };
    let args: Vec<String> = sidecar.args.iter().map(|a| local(a)).collect();
    let env: BTreeMap<String, String> = sidecar
        .env
        .iter()
        .map(|(k, v)| (k.clone(), local(v)))
        .collect();

    let workdir = root.path().join("workdir");
    std::fs::create_dir_all(&workdir).unwrap();
    let log = root.path().join("stderr.log");
    let child = Command::new(BIN)
        .args(&args)
        .env_clear()
        .envs(&env)
        .current_dir(&workdir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut guard = KillOnDrop(Some(child));
    let child = guard.0.as_mut().unwrap();

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let result = async {
        // The startup probe first, then liveness and readiness (readiness may
        // take a moment: it waits for the store and the listener).
        for (probe, path) in &probe_paths {
            let url = format!("http://{admin_addr}{path}");
            wait_for_status(&http, child, &url, 200).await;
            let status = http.get(&url).send().await.unwrap().status();
            assert_eq!(status, 200, "{probe} {path}");
        }

        // The admin API is open to the network, so it needs the token.
        let events = format!("http://{admin_addr}/api/events");
        let status = http.get(&events).send().await.unwrap().status();
        assert_eq!(status, 401, "unauthenticated /api/events");
        let token = &env["LLM_AUDIT_PROXY_ADMIN_TOKEN"];
        let resp = http.get(&events).bearer_auth(token).send().await.unwrap();
        assert_eq!(resp.status(), 200, "/api/events with the Secret's token");
        let body: Value = resp.json().await.unwrap();
        assert!(body["events"].is_array(), "{body}");
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), result).await;
    let mut child = guard.0.take().unwrap();
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(outcome.is_ok(), "timed out; the binary said:\n{stderr}");
    assert!(term.success());
    assert_eq!(
        exit.code(),
        Some(0),
        "exit after SIGTERM; stderr:\n{stderr}"
    );
}

/// The Secret name and key `file` comes from: the volume mounted on the
/// folder that holds it in `container`.
fn secret_file_source(pod: &Value, container: &Value, file: &str) -> (String, String) {
    let path = Path::new(file);
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| path.parent() == Some(Path::new(str_of(&m["mountPath"], "mountPath"))))
        .unwrap_or_else(|| panic!("no volume mounted where {file} is"));
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let secret = &volume["secret"];
    let key = path.file_name().unwrap().to_str().unwrap().to_owned();
    if let Some(items) = secret["items"].as_array() {
        assert!(
            items.iter().any(|i| i["path"] == key.as_str()),
            "{file} is not among the Secret's items"
        );
    }
    (str_of(&secret["secretName"], "secretName").to_owned(), key)
}

fn stringdata_has(objects: &[Value], secret: &str, key: &str) {
    let s = find(objects, "Secret", secret);
    assert!(s["stringData"][key].is_string(), "{secret} has no {key}");
}

/// The central-shipping overlay gives the sidecar its DSN as a file from a
/// Secret the overlay ships (the patch is read, as kustomize applies it).
#[test]
fn the_central_shipping_overlay_mounts_the_dsn_from_its_secret() {
    let dir = Path::new(BASE).join("overlays/central-shipping");
    let objects = load_kustomization(&dir);
    let k = &load_yaml(&dir.join("kustomization.yaml"))[0];
    let ops: Vec<Value> =
        serde_yaml_ng::from_str(str_of(&k["patches"][0]["patch"], "patch")).unwrap();
    let added = |suffix: &str| -> Value {
        ops.iter()
            .find(|op| op["op"] == "add" && str_of(&op["path"], "path").ends_with(suffix))
            .unwrap_or_else(|| panic!("no op adding {suffix}"))["value"]
            .clone()
    };
    let env = added("/env/-");
    assert_eq!(env["name"], "LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN_FILE");
    let mut deployment = find(&objects, "Deployment", "example-app").clone();
    let pod = &mut deployment["spec"]["template"]["spec"];
    pod["volumes"]
        .as_array_mut()
        .unwrap()
        .push(added("/volumes/-"));
    let mut sidecar = pod["initContainers"][0].clone();
    sidecar["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(added("/volumeMounts/-"));
    let (secret, key) = secret_file_source(pod, &sidecar, str_of(&env["value"], "env value"));
    stringdata_has(&objects, &secret, &key);
}

/// The fleet admin runs `fleet-admin`, listens where its Service points
/// with a token from its Secret, and reads its DSN from that Secret's file.
#[test]
fn the_fleet_admin_manifests_hold_together() {
    let objects = load_kustomization(&Path::new(BASE).join("fleet-admin"));
    let deployment = only(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["args"], serde_json::json!(["fleet-admin"]));
    let listen = env_of(container, "LLM_AUDIT_PROXY_ADMIN_LISTEN").unwrap();
    let service = only(&objects, "Service");
    let port = resolve_port(container, &service["spec"]["ports"][0]["targetPort"]);
    assert_eq!(port, port_of(listen));
    let token = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "LLM_AUDIT_PROXY_ADMIN_TOKEN")
        .unwrap();
    let token_ref = &token["valueFrom"]["secretKeyRef"];
    stringdata_has(
        &objects,
        str_of(&token_ref["name"], "secret"),
        str_of(&token_ref["key"], "key"),
    );
    let dsn_file = env_of(container, "LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN_FILE").unwrap();
    let (secret, key) = secret_file_source(pod, container, dsn_file);
    stringdata_has(&objects, &secret, &key);
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}
