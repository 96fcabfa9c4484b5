pub mod auth;
pub mod clock;
pub mod config;
pub mod floor;
pub mod meeting;
pub mod store;
