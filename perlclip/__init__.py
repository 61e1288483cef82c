"""perlclip: parameter-efficient adaptation of CLIP, PERL and its baselines behind one trainer interface.

The top-level package contains the pieces every other part needs (configuration defaults, the
registry helper, the cache folder, logging and seeding). It imports nothing from
`perlclip.datasets`, `perlclip.methods` or `perlclip.trainers`; they import it.
"""

__version__ = "0.1.0"
