//! `alerter`: see the library docs. Settings come from the environment or `.env`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings: alerter::Settings = common::config::load("alerter");
    common::telemetry::init("info");
    let shutdown = common::shutdown::on_signal();
    match alerter::run(settings, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("alerter: {}", common::telemetry::error_chain(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
