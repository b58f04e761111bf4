fn main() {
    let d = tigel::Device::from_env().unwrap();
    eprintln!("{}", d.note());
}
