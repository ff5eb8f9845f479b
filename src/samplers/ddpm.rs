//! DDPM: unconditional ancestral sampling (guided-diffusion's `p_sample`),
//! x_{t-1} = coef1 x0hat + coef2 x_t + sigma_t z, the base step of every other
//! sampler. The step itself is `ddpm_step` in shaders/sampler.wgsl, planned by
//! [`super::Sampler`] with zero guidance.
