//! One file per subcommand: its clap arguments and what it does.

pub mod bench;
pub mod component;
pub mod cordon;
pub mod describe;
pub mod get;
pub mod kill;
pub mod logs;
pub mod quota;
pub mod run;
pub mod scale;
