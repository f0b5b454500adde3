fn main() -> std::process::ExitCode {
    keygate_control_plane::cli::run()
}
