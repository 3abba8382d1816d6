//! The quickstart: two small sample backends of the Hackitech platform (courses on :8001 and
//! :8002, accounts on :8003, as `routes/` expects; see `samples`) and the gateway in front of
//! them.
//!
//! `cargo run --release --example demo` (arguments after `--` go to `guichet serve`).

mod samples;

use std::net::SocketAddr;

use samples::Service;

fn main() -> std::process::ExitCode {
    let backends = [
        (Service::Courses, "127.0.0.1:8001"),
        (Service::Courses, "127.0.0.1:8002"),
        (Service::Accounts, "127.0.0.1:8003"),
    ];
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the sample backends: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let data = samples::Data::seeded();
    for (service, addr) in backends {
        let addr: SocketAddr = addr.parse().expect("sample addresses are valid");
        let listener = match runtime.block_on(tokio::net::TcpListener::bind(addr)) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!(
                    "sample backend {} cannot listen on {addr}: {e}",
                    service.name()
                );
                return std::process::ExitCode::FAILURE;
            }
        };
        runtime.spawn(samples::serve(service, data.clone(), listener));
    }
    println!("sample backends: courses on :8001 and :8002, accounts on :8003");
    guichet::cli::run()
}
