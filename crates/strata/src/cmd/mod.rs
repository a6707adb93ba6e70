pub mod build;
pub mod copy;
pub mod inspect;
pub mod login;
pub mod ls;
pub mod manifest;
pub mod tags;
