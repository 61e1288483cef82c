"""Method modules (PERL, prompt learners, adapters) and the CLIP backbone wrapper they share."""
