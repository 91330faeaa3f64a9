//! The real clients users have, against a real server: python-devicecloud
//! 0.5.10 and standardwebhooks 1.1.0 from PyPI (`tests/python/`), in the
//! virtualenv `make test` prepares (`PADDOCK_TEST_PYTHON`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

use paddock_tests::server::{Server, plugins_with};
use paddock_tests::tenant::tenant;

#[test]
fn python_devicecloud_and_standardwebhooks_work_against_paddock() {
    let python = std::env::var("PADDOCK_TEST_PYTHON")
        .expect("PADDOCK_TEST_PYTHON is not set: run the tests with `make test`, which prepares the Python clients");
    // A self-signed certificate for the TLS push listener, which the
    // client trusts as its `ca_certs`.
    let certs = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
    let (cert_file, key_file) = (certs.path().join("push.pem"), certs.path().join("push.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let (c2, k2) = (cert_file.clone(), key_file.clone());
    let s = Server::start(plugins_with(&[]), move |c| {
        c.outbound.allow_private = vec!["127.0.0.0/8".into()];
        c.monitors.tls_cert = Some(c2);
        c.monitors.tls_key = Some(k2);
        c.monitors.push_tls_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let t = tenant(&s, "Acme");
    let agent = t.agent(&s, "Tank", "T-1");
    let script = paddock_tests::repo().join("tests/python/devicecloud_monitors.py");
    let mut child = std::process::Command::new(&python)
        .arg(&script)
        .env("PADDOCK_URL", format!("http://{}", s.addr))
        .env("PADDOCK_ORG", &t.org)
        .env("PADDOCK_TOKEN", &t.token)
        .env("PADDOCK_AGENT", &agent)
        .env("PADDOCK_PUSH_PORT", s.push.unwrap().port().to_string())
        .env("PADDOCK_PUSH_TLS_PORT", s.push_tls.unwrap().port().to_string())
        .env("PADDOCK_PUSH_CA", &cert_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    // Bounded: the script's own waits are 10 s each.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the Python client did not finish in 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("every check passed"), "{stdout}\n{stderr}");
}
