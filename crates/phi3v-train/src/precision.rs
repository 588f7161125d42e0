//! The frozen base's storage dtype and the arithmetic of its products, shared with every
//! command that loads a model (see [`phi3v::nn::BaseDtype`] and
//! [`phi3v::nn::ProductDtype`]).

pub use phi3v::nn::{BaseDtype, ProductDtype};
