"""Plain ``nn.Module`` networks; the LightningModules in ``apa_lightning.models`` train them."""
