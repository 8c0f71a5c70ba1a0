//! A throwaway PKI made with rcgen for the TLS tests: logsift's server certificate and the
//! shippers' client certificates.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

/// A CA with a server certificate for localhost/127.0.0.1 and a client certificate, plus a
/// second CA's client certificate that the server must not accept.
pub fn make_pki(dir: &Path) -> Pki {
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("logsift test CA");
    let (other_cert, other_key) = ca("someone else's CA");
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
    write("ca.pem", ca_cert.pem());

    let mut server =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().unwrap();
    let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key).unwrap();
    write("server.pem", server_cert.pem());
    write("server.key", server_key.serialize_pem());

    for (name, issuer, issuer_key) in [
        ("client", &ca_cert, &ca_key),
        ("stranger", &other_cert, &other_key),
    ] {
        let mut p = CertificateParams::new(vec![format!("{name}.shippers")]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, issuer, issuer_key).unwrap();
        write(&format!("{name}.pem"), cert.pem());
        write(&format!("{name}.key"), key.serialize_pem());
    }
    Pki {
        dir: dir.to_path_buf(),
    }
}

pub fn tls_section(pki: &Pki) -> String {
    format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n",
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem")
    )
}
