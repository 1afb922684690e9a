//! leaderd's entry point; the program itself is [`leaderd::app`].

fn main() -> std::process::ExitCode {
    leaderd::app::main()
}
