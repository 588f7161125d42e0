//! The frozen base's storage dtype, shared with every command that loads a model (see
//! [`phi3v::nn::BaseDtype`]).

pub use phi3v::nn::BaseDtype;
