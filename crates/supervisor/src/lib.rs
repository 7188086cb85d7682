//! The Multi-PAR supervisor: spawns one worker per agent, routes
//! `/agents/{id}/...`, restarts what crashes, shares resources, gathers logs.

pub mod cli;
