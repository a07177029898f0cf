//! The tenant portal: links and sessions, pages, forms (over plain HTTP), and a scenario
//! in real headless Chromium.
mod browser;
mod forms;
mod limits;
mod links;
mod pages;
pub mod support;
