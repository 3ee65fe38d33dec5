"""ProAV-DiT: tri-plane audio-video autoencoder (MDSA) + spatio-temporal diffusion transformer."""
