fn main() {
    println!(
        "{}",
        serde_json::to_string_pretty(&pgplan::spec::json_schema()).unwrap()
    );
}
