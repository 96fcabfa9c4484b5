//! coturn for the relay tests: started with a generated config on loopback.
#![allow(dead_code)]

/// How clients authenticate.
pub enum Auth {
    /// A static long-term user and password.
    User(&'static str, &'static str),
    /// The TURN REST scheme (`use-auth-secret`): the server mints credentials from this secret.
    Secret(&'static str),
}

/// A coturn `turnserver` on loopback with its own config, stopped on drop.
pub struct Coturn {
    child: std::process::Child,
    /// Its UDP/TCP port.
    pub port: u16,
    _dir: std::path::PathBuf,
}

impl Coturn {
    /// Starts one; `None` (with a note) when coturn is not installed, which is a failure when
    /// `ROUNDTABLE_REQUIRE_COTURN` is set (CI installs it).
    pub fn start(auth: Auth) -> Option<Coturn> {
        let found = ["/usr/bin/turnserver", "/usr/sbin/turnserver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        if found.is_none() {
            assert!(
                std::env::var_os("ROUNDTABLE_REQUIRE_COTURN").is_none(),
                "coturn is required here: apt-get install coturn"
            );
            eprintln!("coturn not installed (apt-get install coturn): skipped");
        }
        let bin = found?;
        let auth = match auth {
            Auth::User(user, password) => format!("lt-cred-mech\nuser={user}:{password}\n"),
            Auth::Secret(secret) => format!("use-auth-secret\nstatic-auth-secret={secret}\n"),
        };
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = std::env::temp_dir().join(format!("rt-coturn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let conf = dir.join("turnserver.conf");
        std::fs::write(
            &conf,
            format!(
                "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nlistening-port={port}\n\
                 min-port=40000\nmax-port=40999\nrealm=roundtable.test\n{auth}\
                 fingerprint\nno-tls\nno-dtls\nno-cli\n\
                 allow-loopback-peers\nno-software-attribute\nsimple-log\n\
                 log-file={}\npidfile={}\nuserdb={}\n",
                dir.join("turn.log").display(),
                dir.join("turn.pid").display(),
                dir.join("turn.db").display(),
            ),
        )
        .ok()?;
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(Coturn {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}
