//! The channels scenario's peer: Debian's nginx with the nchan module
//! (package libnginx-mod-nchan), on a loopback port of its own, with its
//! own nginx.conf in a scratch directory (printed in docs/benchmarks.md).

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::server::{self, Kind, Server};

/// Where Debian's package puts the module.
pub const MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

/// The channel every subscriber joins, and the paths nchan serves it on.
pub const SUBSCRIBE_PATH: &str = "/sub/bench";
pub const PUBLISH_PATH: &str = "/pub/bench";

/// The configuration: two workers (one per core here, as `auto` would
/// give), room for 10,000+ connections, no access log, every path in
/// `dir`; nchan's defaults otherwise, except that a subscriber starts with
/// the next message rather than the channel's buffered ones.
pub fn config(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "load_module {MODULE};\n\
         worker_processes 2;\n\
         worker_rlimit_nofile 19000;\n\
         daemon off;\n\
         master_process on;\n\
         pid {d}/nginx.pid;\n\
         error_log stderr notice;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 client_body_temp_path {d}/body;\n\
         \x20 proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n\
         \x20 uwsgi_temp_path {d}/uwsgi;\n\
         \x20 scgi_temp_path {d}/scgi;\n\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{port};\n\
         \x20   location = {SUBSCRIBE_PATH} {{\n\
         \x20     nchan_subscriber websocket;\n\
         \x20     nchan_channel_id bench;\n\
         \x20     nchan_subscriber_first_message newest;\n\
         \x20   }}\n\
         \x20   location = {PUBLISH_PATH} {{\n\
         \x20     nchan_publisher http;\n\
         \x20     nchan_channel_id bench;\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n"
    )
}

/// Starts nginx with [`config`] in `dir`; ready once it has started its
/// workers and accepts on its port.
pub async fn start(nginx: &Path, dir: &Path) -> anyhow::Result<Server> {
    let port = server::free_port()?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config(dir, port)).context("write nginx.conf")?;
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        // Errors before the configuration is read go to stderr too.
        .args(["-e", "stderr"]);
    let (server, port) = server::launch(Kind::Nchan, cmd, Some(port), "start worker process")?;
    tokio::task::spawn_blocking(move || server::wait_ready(server, port))
        .await
        .context("start task")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_both_locations_and_the_port() {
        let c = config(Path::new("/tmp/x"), 4321);
        assert!(c.contains("listen 127.0.0.1:4321;"));
        assert!(c.contains("location = /sub/bench {"));
        assert!(c.contains("nchan_publisher http;"));
        assert!(c.contains("pid /tmp/x/nginx.pid;"));
        assert_eq!(c.matches('{').count(), c.matches('}').count());
    }
}
