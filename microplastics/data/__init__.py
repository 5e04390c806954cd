"""Raw data to crops: annotation readers, download and archives, the synthetic generator,
photo-grouped splits, preprocessing, and the image corruptions and augmentation that both model
families share. Imports no torch."""
