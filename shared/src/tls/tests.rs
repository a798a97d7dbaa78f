use super::make::Ca;
use super::*;
use rustls::pki_types::ServerName;
use std::os::unix::fs::PermissionsExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server: Identity,
    client: Identity,
    foreign_ca: PathBuf,
    foreign_client: Identity,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_generate(&dir.path().join("ca"), "test CA").unwrap();
    let server = ca
        .write_identity(dir.path(), "server", &["localhost", "127.0.0.1"])
        .unwrap();
    let client = ca
        .write_identity(dir.path(), "client", &["master"])
        .unwrap();
    let foreign = Ca::generate("test CA").unwrap();
    let foreign_ca = foreign.write_cert(&dir.path().join("foreign.pem")).unwrap();
    let foreign_client = foreign
        .write_identity(dir.path(), "foreign-client", &["master"])
        .unwrap();
    Pki {
        ca: dir.path().join("ca").join("ca.pem"),
        _dir: dir,
        server,
        client,
        foreign_ca,
        foreign_client,
    }
}

/// Serve one echo over TLS with `server`; connect as `client`; the client's result.
async fn exchange(server: Arc<ServerConfig>, client: ClientConfig) -> std::io::Result<Vec<u8>> {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut listener = TlsListener::new(tcp, server).unwrap();
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    tokio::spawn(async move {
        let (mut tls, _) = axum::serve::Listener::accept(&mut listener).await;
        let mut buf = [0u8; 4];
        if tls.read_exact(&mut buf).await.is_ok() {
            let _ = tls.write_all(&buf).await;
            let _ = tls.shutdown().await;
        }
    });
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, stream).await?;
    tls.write_all(b"ping").await?;
    let mut back = Vec::new();
    tls.read_to_end(&mut back).await?;
    Ok(back)
}

#[tokio::test]
async fn a_client_trusting_the_cluster_ca_talks_to_its_server() {
    let p = pki();
    let server = server_config(&p.server, None).unwrap();
    let client = client_config(&p.ca, None).unwrap();
    assert_eq!(exchange(server, client).await.unwrap(), b"ping");
}

#[tokio::test]
async fn a_server_from_another_ca_is_refused_in_plain_words() {
    let p = pki();
    let server = server_config(&p.server, None).unwrap();
    let client = client_config(&p.foreign_ca, None).unwrap();
    let e = exchange(server, client).await.unwrap_err();
    let said = failure(&e).expect("a TLS failure");
    assert!(said.contains("not signed by the cluster CA"), "{said}");
}

#[tokio::test]
async fn mutual_tls_wants_a_client_certificate_of_the_same_ca() {
    let p = pki();
    let server = || server_config(&p.server, Some(&p.ca)).unwrap();
    let ok = client_config(&p.ca, Some(&p.client)).unwrap();
    assert_eq!(exchange(server(), ok).await.unwrap(), b"ping");
    // TLS 1.3 reports a refused client certificate on the first read.
    let none = client_config(&p.ca, None).unwrap();
    assert!(exchange(server(), none).await.is_err());
    let foreign = client_config(&p.ca, Some(&p.foreign_client)).unwrap();
    assert!(exchange(server(), foreign).await.is_err());
}

#[tokio::test]
async fn keys_are_private_and_a_kept_ca_signs_again() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_generate(dir.path(), "kept").unwrap();
    let again = Ca::load_or_generate(dir.path(), "kept").unwrap();
    assert_eq!(ca.cert_pem, again.cert_pem);
    let id = again
        .write_identity(dir.path(), "leaf", &["localhost"])
        .unwrap();
    for key in [dir.path().join("ca.key"), id.key.clone()] {
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    // A certificate issued by the reloaded CA verifies against the original.
    let id = again
        .write_identity(dir.path(), "server", &["127.0.0.1"])
        .unwrap();
    let server = server_config(&id, None).unwrap();
    let client = client_config(&dir.path().join("ca.pem"), None).unwrap();
    assert_eq!(exchange(server, client).await.unwrap(), b"ping");
}

#[test]
fn files_that_hold_nothing_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = client_config(&empty, None).unwrap_err().to_string();
    assert!(
        e.contains("empty.pem") && e.contains("no PEM certificate"),
        "{e}"
    );
    let missing = dir.path().join("missing.pem");
    let e = client_config(&missing, None).unwrap_err().to_string();
    assert!(e.contains("missing.pem"), "{e}");
    assert!(Identity::from_flags(Some(&empty), None).is_err());
    assert_eq!(Identity::from_flags(None, None), Ok(None));
}

#[tokio::test]
async fn reqwest_failures_are_recognised() {
    let p = pki();
    let server = server_config(&p.server, None).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener::new(tcp, server).unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let _ = axum::serve(listener, app).await;
    });
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(client_config(&p.foreign_ca, None).unwrap())
        .build()
        .unwrap();
    let e = http
        .get(format!("https://{addr}/"))
        .send()
        .await
        .unwrap_err();
    let said = failure(&e).unwrap_or_else(|| panic!("not seen as TLS: {e:?}"));
    assert!(said.contains("not signed by the cluster CA"), "{said}");
    let good = reqwest::Client::builder()
        .use_preconfigured_tls(client_config(&p.ca, None).unwrap())
        .build()
        .unwrap();
    let text = good.get(format!("https://{addr}/")).send().await.unwrap();
    assert_eq!(text.text().await.unwrap(), "ok");
}
