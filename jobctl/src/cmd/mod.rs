//! One file per subcommand: its clap arguments and what it does.

pub mod apply;
pub mod bench;
pub mod completion;
pub mod component;
pub mod cordon;
pub mod describe;
pub mod describe_more;
pub mod get;
pub mod get_watch;
pub mod kill;
pub mod logs;
pub mod plan;
pub mod quota;
pub mod resolve;
pub mod rollout;
pub mod run;
pub mod scale;
pub mod token;
pub mod top;
pub mod version;
pub mod wait;
