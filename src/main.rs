fn main() {
    std::process::exit(tweedie::cli::main());
}
