mod body;
mod client;
mod store;
fn main() {}
