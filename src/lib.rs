pub mod auth;
pub mod config;
pub mod floor;
pub mod store;
