//! `ingestor`: see the library docs. Settings come from the environment or `.env`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings: ingestor::Settings = common::config::load("ingestor");
    common::telemetry::init("info");
    let shutdown = common::shutdown::on_signal();
    match ingestor::run(settings, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ingestor: {}", common::telemetry::error_chain(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
